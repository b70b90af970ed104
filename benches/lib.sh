# Shared by the bench scripts (sourced, not run): process clean-up and port waiting.
# The caller sets OUT (where logs go) before calling wait_port.

PIDS=()

# Stops every process in PIDS: TERM, up to 5 s, then KILL.
stop_all() {
    for pid in "${PIDS[@]}"; do
        kill "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -9 "$pid" 2>/dev/null || true
    done
    PIDS=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# Waits up to 10 s for 127.0.0.1:$1 to accept; prints $OUT/$2.log and exits if not.
wait_port() {
    local port=$1 name=$2
    for _ in $(seq 100); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            return 0
        fi
        sleep 0.1
    done
    echo "$name did not listen on 127.0.0.1:$port; its log:" >&2
    cat "$OUT/$name.log" >&2 || true
    exit 1
}

# Starts wsauth-server on 127.0.0.1:$1 (admin on $2), logging to $OUT/$3.log, with the
# benchmark settings; extra environment can be given as further NAME=value arguments.
# Sets SERVER_PID.
start_wsauth() {
    local port=$1 admin=$2 name=$3
    shift 3
    env WSAUTH_ADMIN_KEY="${WSAUTH_ADMIN_KEY:-bench-admin-key-0123456789}" \
        WSAUTH_LIMITS__MAX_UNAUTHENTICATED_PER_IP=100000 \
        WSAUTH_LOG__LEVEL=warn "$@" \
        "$BIN/wsauth-server" --listen "127.0.0.1:$port" --admin-listen "127.0.0.1:$admin" \
        >"$OUT/$name.log" 2>&1 &
    SERVER_PID=$!
    PIDS+=("$SERVER_PID")
    wait_port "$port" "$name"
}
