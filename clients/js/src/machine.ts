// The protocol logic of a wsauth.v1 client, without I/O (the same sans-IO idea as the
// server's core, docs/architecture.md). Inputs are socket events, frames, timer firings,
// token results and application commands; each input returns the actions the driver must
// perform (send a frame, open or close a socket, set or clear a timer, call getToken, emit an
// event, settle a promise). Time and randomness are injected.

export type State = "idle" | "connecting" | "authenticating" | "live" | "reconnecting" | "closed";

export interface MessageEvent {
  channel: string;
  seq: number;
  from?: string;
  data: unknown;
}
export interface GapEvent {
  lastSeq: number;
}
export interface ExpiringEvent {
  expiresAt: number;
}
export interface ErrorEvent {
  code: string;
  message: string;
  fatal: boolean;
  retry?: string;
}
export interface ClosedEvent {
  code: number;
  retry?: string;
  reason: string;
}
export interface SessionEvent {
  kind: "authenticated" | "resumed" | "reauthenticated";
  sessionId: string;
  userId: string;
}

export interface Events {
  state: State;
  message: MessageEvent;
  gap: GapEvent;
  expiring: ExpiringEvent;
  error: ErrorEvent;
  closed: ClosedEvent;
  session: SessionEvent;
}

/** How a request promise fails. */
export interface Failure {
  code: string;
  message: string;
  details?: unknown;
}

export type Action =
  | { type: "open"; conn: number }
  | { type: "send"; conn: number; frame: Record<string, unknown> }
  /** `abort`: the connection is presumed dead; drop it without a closing handshake. */
  | { type: "close"; conn: number; code: number; reason: string; abort?: boolean }
  | { type: "setTimer"; name: string; ms: number }
  | { type: "clearTimer"; name: string }
  | { type: "getToken"; req: number }
  | { [K in keyof Events]: { type: "emit"; event: K; payload: Events[K] } }[keyof Events]
  | { type: "resolve"; handle: number; value: unknown }
  | { type: "reject"; handle: number; failure: Failure };

export type Input =
  | { type: "connect"; handle: number }
  | { type: "disconnect" }
  /** The device went offline / came back (browsers' `offline` and `online` events). */
  | { type: "offline" }
  | { type: "online" }
  | { type: "close" }
  | { type: "logout"; handle: number }
  | { type: "join"; handle: number; channel: string }
  | { type: "leave"; handle: number; channel: string }
  | { type: "publish"; handle: number; channel: string; data: unknown }
  | { type: "rpc"; handle: number; method: string; data: unknown; timeoutMs?: number }
  | { type: "socketOpen"; conn: number }
  | { type: "socketMessage"; conn: number; text: string }
  | { type: "socketClose"; conn: number; code: number; reason: string }
  | { type: "timer"; name: string }
  | { type: "tokenResult"; req: number; ok: true; token: string }
  | { type: "tokenResult"; req: number; ok: false; error: string };

export interface MachineOptions {
  now: () => number;
  random: () => number;
  backoffBaseMs?: number;
  backoffCapMs?: number;
  getTokenTimeoutMs?: number;
  rpcTimeoutMs?: number;
  pongTimeoutMs?: number;
  /** Bound on opening a socket and authenticating on it. */
  attemptTimeoutMs?: number;
}

/** Wait before reconnection attempt `attempt` (0-based): uniform in [0, min(cap, base·2^n)]. */
export function backoffDelay(attempt: number, baseMs: number, capMs: number, random: () => number): number {
  const ceiling = Math.min(capMs, baseMs * Math.pow(2, Math.min(attempt, 30)));
  return random() * ceiling;
}

/** Close codes after which the server asks for a gentle first retry (shutdown, fault, overload). */
const GENTLE_CLOSES = new Set([1001, 1011, 1013]);
const GENTLE_FIRST_WAIT_MS = 5000;

/** What to do after a close without a fatal error (protocol.md §6 "Close codes"). */
export function hintForClose(code: number): "none" | "reauth" | "reconnect" {
  switch (code) {
    case 1000: // logout, or the session was ended with 1000
    case 1007: // invalid UTF-8: a client bug
    case 4400: // a client bug
    case 4403: // revoked
    case 4409: // replaced
      return "none";
    case 4401:
      return "reauth";
    default:
      // 1001, 1005, 1006, 1009, 1011, 1013, 4408, 4429 and anything unknown
      return "reconnect";
  }
}

interface Session {
  sessionId: string;
  resumeToken: string;
  userId: string;
  expiresAt: number;
  heartbeatMs: number;
}

type Pending =
  | { kind: "auth" }
  | { kind: "resume" }
  | { kind: "refresh" }
  | { kind: "join"; channel: string }
  | { kind: "leave"; channel: string }
  | { kind: "publish"; handle: number }
  | { kind: "rpc"; handle: number }
  | { kind: "ping" };


const T_BACKOFF = "backoff";
const T_TOKEN = "token";
const T_ATTEMPT = "attempt";
const T_IDLE = "idle";
const T_PONG = "pong";
const T_REFRESH_AT = "refreshAt";
const T_REFRESH_RETRY = "refreshRetry";
const rpcTimer = (id: number) => `rpc:${id}`;

export class Machine {
  private readonly o: Required<MachineOptions>;
  private out: Action[] = [];

  state: State = "idle";
  session: Session | null = null;
  /** The user of the latest session, kept after it ends. */
  userId: string | undefined;
  private hadSession = false;
  private lastSeq = 0;

  private conn = 0;
  private socketOpen = false;
  /** The fatal error read on the current socket, if any. */
  private fatal: ErrorEvent | null = null;
  private live = false;
  /** What the current socket sent to become live, until it is. */
  private handshake: null | "auth" | "resume" = null;

  private nextId = 1;
  private pending = new Map<number, Pending>();
  private timers = new Set<string>();

  private attempt = 0;
  /** Offline: no attempt until the device is back online. */
  private offline = false;
  /** A retry hint of the previous connection end, consumed by the next attempt. */
  private needFreshToken = false;
  private reauthFailures = 0;

  private tokenReq = 0;
  private tokenInFlight = false;
  private freshToken: string | null = null;

  private refreshDue = false;
  private refreshInFlight = false;
  private refreshAttempt = 0;
  private refreshAtTime = Infinity;

  /** The channels the application wants joined. */
  private wanted = new Set<string>();
  /** The channels the server holds for the current session, as far as we know. */
  private joined = new Set<string>();
  private joinWaiters = new Map<string, number[]>();
  private leaveWaiters = new Map<string, number[]>();
  private connectWaiters: number[] = [];
  private logoutWaiters: number[] = [];

  constructor(options: MachineOptions) {
    this.o = {
      backoffBaseMs: 250,
      backoffCapMs: 30000,
      getTokenTimeoutMs: 10000,
      rpcTimeoutMs: 10000,
      pongTimeoutMs: 10000,
      attemptTimeoutMs: 15000,
      ...options,
    };
  }

  get sessionId(): string | undefined {
    return this.session?.sessionId;
  }

  /** Timers currently set (for tests and for the driver's bookkeeping). */
  activeTimers(): string[] {
    return [...this.timers];
  }

  handle(input: Input): Action[] {
    this.out = [];
    switch (input.type) {
      case "connect":
        this.onConnect(input.handle);
        break;
      case "disconnect":
        this.onDisconnect();
        break;
      case "offline":
        this.onOffline();
        break;
      case "online":
        this.onOnline();
        break;
      case "close":
        this.onClose();
        break;
      case "logout":
        this.onLogout(input.handle);
        break;
      case "join":
        this.onJoin(input.handle, input.channel);
        break;
      case "leave":
        this.onLeave(input.handle, input.channel);
        break;
      case "publish":
        this.onRequest(input.handle, { type: "publish", channel: input.channel, data: input.data }, "publish");
        break;
      case "rpc":
        this.onRequest(
          input.handle,
          { type: "rpc", method: input.method, data: input.data === undefined ? null : input.data },
          "rpc",
          input.timeoutMs ?? this.o.rpcTimeoutMs,
        );
        break;
      case "socketOpen":
        if (input.conn === this.conn) this.onSocketOpen();
        break;
      case "socketMessage":
        if (input.conn === this.conn && this.socketOpen) this.onFrame(input.text);
        break;
      case "socketClose":
        if (input.conn === this.conn) this.onSocketClose(input.code, input.reason);
        break;
      case "timer":
        if (this.timers.delete(input.name)) this.onTimer(input.name);
        break;
      case "tokenResult":
        if (input.req === this.tokenReq && this.tokenInFlight) {
          this.tokenInFlight = false;
          this.clearTimer(T_TOKEN);
          if (input.ok) this.onToken(input.token);
          else this.onTokenFailure(input.error);
        }
        break;
    }
    const out = this.out;
    this.out = [];
    return out;
  }

  // ---- application commands ----

  private onConnect(handle: number): void {
    if (this.state === "closed") {
      this.reject(handle, "CLOSED", "the client is closed");
      return;
    }
    if (this.state === "live") {
      this.resolve(handle, undefined);
      return;
    }
    this.connectWaiters.push(handle);
    if (this.state === "idle") {
      this.attempt = 0;
      this.startAttempt();
    }
  }

  private onDisconnect(): void {
    if (this.state === "closed" || this.state === "idle") return;
    // A resume sent but not answered may have spent the resume token.
    if (this.handshake === "resume") this.dropSession();
    this.endSocket(4000, "disconnect");
    this.afterSocketGone();
    this.stopAllTimers();
    this.tokenInFlight = false;
    this.freshToken = null;
    this.rejectAll(this.connectWaiters, "DISCONNECTED", "disconnect() was called");
    this.connectWaiters = [];
    this.setState("idle");
  }

  /** Going offline is a transient disconnect (close 4000, resumable); back online, reconnect. */
  private onOffline(): void {
    if (this.state === "closed" || this.state === "idle" || this.offline) return;
    this.offline = true;
    if (this.handshake === "resume") this.dropSession();
    this.endSocket(4000, "offline");
    this.afterSocketGone();
    this.stopAllTimers();
    this.tokenInFlight = false;
    this.setState("reconnecting");
  }

  private onOnline(): void {
    if (!this.offline) return;
    this.offline = false;
    if (this.state !== "reconnecting") return;
    this.attempt = 0;
    if (this.session && this.o.now() >= this.refreshAtTime) this.refreshDue = true;
    this.proceed();
  }

  private onClose(): void {
    if (this.state === "closed") return;
    this.endSocket(1000, "close");
    this.finish({ code: 1000, reason: "closed by the application" });
  }

  private onLogout(handle: number): void {
    if (this.state === "closed") {
      this.resolve(handle, undefined);
      return;
    }
    if (this.state === "live" && this.socketOpen) {
      this.out.push({ type: "send", conn: this.conn, frame: { type: "logout" } });
      this.logoutWaiters.push(handle);
      // The server answers logout with close 1000; closing with 1000 ourselves ends the
      // session too, should the server's close not arrive.
      this.endSocket(1000, "logout");
      this.finish({ code: 1000, reason: "logout" });
      return;
    }
    // Not connected: close 1000 whatever socket is opening; a detached session is forgotten
    // (the server drops it when its grace period ends).
    this.logoutWaiters.push(handle);
    this.endSocket(1000, "logout");
    this.finish({ code: 1000, reason: "logout" });
  }

  private onJoin(handle: number, channel: string): void {
    if (this.state === "closed") {
      this.reject(handle, "CLOSED", "the client is closed");
      return;
    }
    this.wanted.add(channel);
    this.push(this.joinWaiters, channel, handle);
    if (this.live) this.sendJoin(channel);
  }

  private onLeave(handle: number, channel: string): void {
    if (this.state === "closed") {
      this.reject(handle, "CLOSED", "the client is closed");
      return;
    }
    this.wanted.delete(channel);
    // A join still waiting is superseded.
    this.rejectAll(this.joinWaiters.get(channel) ?? [], "LEFT", `left ${channel} before it was joined`);
    this.joinWaiters.delete(channel);
    if (this.live) {
      this.push(this.leaveWaiters, channel, handle);
      this.sendLeave(channel);
    } else if (this.session) {
      // Applied on resume, if the server still holds the channel.
      this.push(this.leaveWaiters, channel, handle);
    } else {
      this.resolve(handle, undefined);
    }
  }

  private onRequest(
    handle: number,
    frame: Record<string, unknown>,
    kind: "publish" | "rpc",
    timeoutMs?: number,
  ): void {
    if (!this.live || !this.socketOpen) {
      this.reject(handle, "DISCONNECTED", `not connected: ${kind} not sent`);
      return;
    }
    const id = this.send(frame, { kind, handle });
    if (kind === "rpc" && timeoutMs !== undefined) this.setTimer(rpcTimer(id), timeoutMs);
  }

  // ---- connection attempts ----

  /** Starts a connection attempt now: fetch a token when one is needed, then open. */
  private startAttempt(): void {
    this.setState("connecting");
    if (this.session && this.o.now() >= this.refreshAtTime) this.refreshDue = true;
    this.proceed();
  }

  /** Opens the socket once whatever the attempt needs is at hand. */
  private proceed(): void {
    const needToken = !this.session || this.refreshDue || this.needFreshToken;
    if (needToken && this.freshToken === null) {
      this.requestToken();
      return;
    }
    this.conn += 1;
    this.socketOpen = false;
    this.handshake = null;
    this.fatal = null;
    this.out.push({ type: "open", conn: this.conn });
    this.setTimer(T_ATTEMPT, this.o.attemptTimeoutMs);
  }

  private requestToken(): void {
    if (this.tokenInFlight) return; // single flight: every trigger shares this one
    this.tokenInFlight = true;
    this.tokenReq += 1;
    this.out.push({ type: "getToken", req: this.tokenReq });
    this.setTimer(T_TOKEN, this.o.getTokenTimeoutMs);
  }

  private onToken(token: string): void {
    this.freshToken = token;
    this.needFreshToken = false;
    if (this.state === "connecting" || this.state === "reconnecting") {
      if (!this.socketBusy() && !this.timers.has(T_BACKOFF)) this.proceed();
    } else if (this.live) {
      this.maybeSendRefresh();
    }
  }

  /** Whether a socket of the current attempt is opening or open. */
  private socketBusy(): boolean {
    return this.timers.has(T_ATTEMPT);
  }

  private onTokenFailure(error: string): void {
    if (this.live) {
      this.emitError({ code: "TOKEN_UNAVAILABLE", message: `getToken failed: ${error}`, fatal: false });
      this.scheduleRefreshRetry();
      return;
    }
    if (this.state === "connecting" || this.state === "reconnecting") {
      if (this.socketBusy()) return; // a refresh token for after resume; resume goes on without it
      this.emitError({ code: "TOKEN_UNAVAILABLE", message: `getToken failed: ${error}`, fatal: false });
      if (!this.timers.has(T_BACKOFF)) this.scheduleReconnect(null);
    }
  }

  private onSocketOpen(): void {
    this.socketOpen = true;
    this.setState("authenticating");
    if (this.session && !this.needFreshToken) {
      this.handshake = "resume";
      this.send(
        {
          type: "resume",
          session_id: this.session.sessionId,
          resume_token: this.session.resumeToken,
          last_seq: this.lastSeq,
        },
        { kind: "resume" },
      );
    } else {
      const token = this.freshToken;
      this.freshToken = null;
      if (token === null) {
        // Cannot happen: proceed() only opens with a token at hand. Be safe anyway.
        this.needFreshToken = true;
        this.endSocket(4000, "no token");
        this.afterSocketGone();
        this.scheduleReconnect(null);
        return;
      }
      this.session = null;
      this.handshake = "auth";
      this.send({ type: "auth", token }, { kind: "auth" });
    }
  }

  private onSocketClose(code: number, reason: string): void {
    const wasLive = this.live;
    const pendingResume = this.handshake === "resume";
    const pendingAuth = this.handshake === "auth";
    this.socketOpen = false;
    this.afterSocketGone();
    this.clearTimer(T_ATTEMPT);
    const fatal = this.fatal;
    this.fatal = null;

    let hint: string = fatal?.retry ?? hintForClose(code);
    if (fatal?.code === "SESSION_NOT_FOUND" || (pendingResume && hint === "reauth")) {
      // The session is gone: authenticate anew once, then re-join the channels.
      this.dropSession();
      hint = "reauth";
    } else if (pendingResume) {
      // The connection broke between resume and resumed: the resume token may be spent.
      this.dropSession();
    }

    if (hint === "none") {
      this.finish({ code, retry: "none", reason: fatal?.message ?? (reason || `closed ${code}`) });
      return;
    }
    if (!wasLive && !fatal) {
      this.emitError({
        code: "CONNECT_FAILED",
        message: `connection ended before authentication (close ${code}${reason ? `: ${reason}` : ""})`,
        fatal: false,
        retry: hint,
      });
    }
    if (hint === "reauth") {
      if (pendingAuth || this.needFreshToken) this.reauthFailures += 1;
      else this.reauthFailures = Math.max(this.reauthFailures, 1);
      if (pendingAuth && this.reauthFailures >= 2) {
        // A fresh token failed too: give up and tell the application.
        this.finish({ code, retry: "reauth", reason: fatal?.message ?? `authentication failed (close ${code})` });
        return;
      }
      this.dropSession();
      this.needFreshToken = true;
      this.freshToken = null;
      this.refreshDue = false;
    }
    this.scheduleReconnect(code);
  }

  /** Bookkeeping once the current socket is gone (or being abandoned). */
  private afterSocketGone(): void {
    this.live = false;
    this.handshake = null;
    this.stopTimer(T_IDLE);
    this.stopTimer(T_PONG);
    this.stopTimer(T_REFRESH_RETRY);
    for (const [id, p] of this.pending) {
      if (p.kind === "rpc" || p.kind === "publish") {
        this.stopTimer(rpcTimer(id));
        this.reject(p.handle, "DISCONNECTED", "the connection was lost before the answer (not resent)");
      }
    }
    this.pending.clear();
    this.refreshInFlight = false;
  }

  /** Closes the current socket on purpose. */
  private endSocket(code: number, reason: string, abort = false): void {
    if (this.conn !== 0 && (this.socketOpen || this.timers.has(T_ATTEMPT))) {
      this.out.push({ type: "close", conn: this.conn, code, reason, abort });
    }
    this.socketOpen = false;
    this.clearTimer(T_ATTEMPT);
    // Events of this socket are ignored from now on.
    this.conn += 1;
  }

  private scheduleReconnect(closeCode: number | null): void {
    this.clearTimer(T_ATTEMPT);
    const delay =
      closeCode !== null && GENTLE_CLOSES.has(closeCode) && this.attempt === 0
        ? this.o.random() * GENTLE_FIRST_WAIT_MS
        : backoffDelay(this.attempt, this.o.backoffBaseMs, this.o.backoffCapMs, this.o.random);
    this.attempt += 1;
    this.setState("reconnecting");
    if (this.offline) return; // the `online` input starts the next attempt
    this.setTimer(T_BACKOFF, delay);
  }

  private dropSession(): void {
    if (this.session) this.session = null;
    this.joined.clear();
  }

  // ---- frames ----

  private onFrame(text: string): void {
    let msg: Record<string, unknown>;
    try {
      const parsed: unknown = JSON.parse(text);
      if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) return;
      msg = parsed as Record<string, unknown>;
    } catch {
      return;
    }
    if (this.live) this.armIdle();
    const id = typeof msg.id === "number" ? msg.id : undefined;
    const pending = id !== undefined ? this.pending.get(id) : undefined;
    if (id !== undefined && pending) this.pending.delete(id);
    switch (msg.type) {
      case "authenticated":
        this.onAuthenticated(msg);
        break;
      case "resumed":
        this.onResumed(msg);
        break;
      case "message":
        this.onMessage(msg);
        break;
      case "expiring":
        this.out.push({ type: "emit", event: "expiring", payload: { expiresAt: num(msg.expires_at) } });
        this.refreshDue = true;
        this.startRefresh();
        break;
      case "refreshed":
        if (pending?.kind === "refresh") {
          this.refreshInFlight = false;
          this.refreshDue = false;
          this.refreshAttempt = 0;
          this.stopTimer(T_REFRESH_RETRY);
          if (this.session) this.session.expiresAt = num(msg.expires_at);
          this.armRefreshAt();
        }
        break;
      case "joined": {
        const channel = str(msg.channel);
        this.joined.add(channel);
        this.settleAll(this.joinWaiters, channel, undefined);
        break;
      }
      case "left": {
        const channel = str(msg.channel);
        this.joined.delete(channel);
        if (id === undefined) {
          // The server left it for us (the claims no longer allow it).
          this.wanted.delete(channel);
          this.emitError({
            code: str(msg.reason) || "FORBIDDEN",
            message: `left ${channel}: no longer allowed`,
            fatal: false,
          });
        } else {
          this.settleAll(this.leaveWaiters, channel, undefined);
        }
        break;
      }
      case "published":
        if (pending?.kind === "publish") this.resolve(pending.handle, undefined);
        break;
      case "rpc_result":
        if (pending?.kind === "rpc") {
          this.stopTimer(rpcTimer(id!));
          this.resolve(pending.handle, msg.data);
        }
        break;
      case "pong":
        this.stopTimer(T_PONG);
        if (this.live) this.armIdle();
        break;
      case "error":
        this.onError(msg, pending, id);
        break;
      default:
        break; // unknown types are ignored, as the protocol asks
    }
  }

  private onAuthenticated(msg: Record<string, unknown>): void {
    const kind = this.hadSession ? "reauthenticated" : "authenticated";
    const hadSeq = this.lastSeq;
    this.session = {
      sessionId: str(msg.session_id),
      resumeToken: str(msg.resume_token),
      userId: str(msg.user_id),
      expiresAt: num(msg.expires_at),
      heartbeatMs: num(msg.heartbeat_ms) || 25000,
    };
    this.userId = this.session.userId;
    this.lastSeq = 0; // a new session counts from 1 again
    this.joined.clear();
    this.refreshDue = false;
    this.refreshAttempt = 0;
    this.becomeLive();
    this.out.push({
      type: "emit",
      event: "session",
      payload: { kind, sessionId: this.session.sessionId, userId: this.session.userId },
    });
    if (kind === "reauthenticated") {
      // The old session's undelivered messages are lost.
      this.out.push({ type: "emit", event: "gap", payload: { lastSeq: hadSeq } });
    }
    this.hadSession = true;
    for (const channel of this.wanted) this.sendJoin(channel);
    // Leaves waiting for a session that is gone are done.
    for (const [, handles] of this.leaveWaiters) for (const h of handles) this.resolve(h, undefined);
    this.leaveWaiters.clear();
    this.afterLive();
  }

  private onResumed(msg: Record<string, unknown>): void {
    if (!this.session) return;
    this.session.resumeToken = str(msg.resume_token);
    this.session.expiresAt = num(msg.expires_at);
    const held = Array.isArray(msg.channels) ? msg.channels.map(str) : [];
    this.joined = new Set(held);
    this.becomeLive();
    this.out.push({
      type: "emit",
      event: "session",
      payload: { kind: "resumed", sessionId: this.session.sessionId, userId: this.session.userId },
    });
    if (msg.gap === true) this.out.push({ type: "emit", event: "gap", payload: { lastSeq: this.lastSeq } });
    for (const channel of this.wanted) {
      if (held.includes(channel)) this.settleAll(this.joinWaiters, channel, undefined);
      else this.sendJoin(channel);
    }
    for (const channel of held) if (!this.wanted.has(channel)) this.sendLeave(channel);
    for (const [channel, handles] of [...this.leaveWaiters]) {
      if (!held.includes(channel)) {
        for (const h of handles) this.resolve(h, undefined);
        this.leaveWaiters.delete(channel);
      }
    }
    this.afterLive();
  }

  private becomeLive(): void {
    this.live = true;
    this.handshake = null;
    this.attempt = 0;
    this.reauthFailures = 0;
    this.needFreshToken = false;
    this.clearTimer(T_ATTEMPT);
    this.setState("live");
    this.armIdle();
    this.armRefreshAt();
  }

  private afterLive(): void {
    const waiters = this.connectWaiters;
    this.connectWaiters = [];
    for (const h of waiters) this.resolve(h, undefined);
    if (this.refreshDue) this.startRefresh();
  }

  private onMessage(msg: Record<string, unknown>): void {
    const seq = num(msg.seq);
    if (seq <= this.lastSeq) return; // a duplicate (replayed or resent): deliver each seq once
    this.lastSeq = seq;
    const event: MessageEvent = { channel: str(msg.channel), seq, data: msg.data };
    if (typeof msg.from === "string") event.from = msg.from;
    this.out.push({ type: "emit", event: "message", payload: event });
  }

  private onError(msg: Record<string, unknown>, pending: Pending | undefined, id: number | undefined): void {
    const error: ErrorEvent = { code: str(msg.code), message: str(msg.message), fatal: msg.fatal === true };
    if (typeof msg.retry === "string") error.retry = msg.retry;
    const failure: Failure = { code: error.code, message: error.message };
    if (msg.details !== undefined) failure.details = msg.details;
    if (error.fatal) {
      this.fatal = error;
      this.emitError(error);
      return; // the close follows
    }
    this.emitError(error);
    if (!pending) return;
    switch (pending.kind) {
      case "refresh":
        this.refreshInFlight = false;
        this.scheduleRefreshRetry();
        break;
      case "join":
        this.wanted.delete(pending.channel);
        this.settleAll(this.joinWaiters, pending.channel, failure);
        break;
      case "leave":
        this.settleAll(this.leaveWaiters, pending.channel, failure);
        break;
      case "publish":
        this.reject(pending.handle, failure.code, failure.message, failure.details);
        break;
      case "rpc":
        this.stopTimer(rpcTimer(id!));
        this.reject(pending.handle, failure.code, failure.message, failure.details);
        break;
      default:
        break;
    }
  }

  // ---- refresh ----

  private startRefresh(): void {
    if (!this.live) return; // done at the next (re)connection, with a fresh token first
    this.maybeSendRefresh();
  }

  private maybeSendRefresh(): void {
    if (!this.refreshDue || this.refreshInFlight || !this.live || !this.socketOpen) return;
    if (this.timers.has(T_REFRESH_RETRY)) return;
    if (this.freshToken === null) {
      this.requestToken();
      return;
    }
    const token = this.freshToken;
    this.freshToken = null;
    this.refreshInFlight = true;
    this.send({ type: "refresh", token }, { kind: "refresh" });
  }

  private scheduleRefreshRetry(): void {
    const expiresAt = this.session?.expiresAt ?? 0;
    const left = expiresAt - this.o.now();
    if (left <= 0) return; // too late: the session ends, and reauthentication takes over
    const delay = Math.min(
      backoffDelay(this.refreshAttempt, this.o.backoffBaseMs, this.o.backoffCapMs, this.o.random),
      left,
    );
    this.refreshAttempt += 1;
    this.setTimer(T_REFRESH_RETRY, delay);
  }

  /** Our own reminder, in case the `expiring` notice is missed: the server's formula. */
  private armRefreshAt(): void {
    if (!this.session) return;
    const now = this.o.now();
    const left = this.session.expiresAt - now;
    const lead = Math.min(60000, Math.max(0, left) / 2);
    this.refreshAtTime = now + Math.max(0, left - lead);
    this.setTimer(T_REFRESH_AT, Math.max(0, left - lead));
  }

  // ---- timers ----

  private onTimer(name: string): void {
    switch (name) {
      case T_BACKOFF:
        this.proceed();
        break;
      case T_TOKEN:
        // getToken took too long: a failed attempt. Its late result is ignored.
        this.tokenReq += 1;
        this.tokenInFlight = false;
        this.onTokenFailure(`no token within ${this.o.getTokenTimeoutMs} ms`);
        break;
      case T_ATTEMPT: {
        const hadResume = this.handshake === "resume";
        this.endSocket(4000, "attempt timed out", true);
        this.afterSocketGone();
        if (hadResume) this.dropSession();
        this.emitError({ code: "CONNECT_FAILED", message: "connecting timed out", fatal: false, retry: "reconnect" });
        this.scheduleReconnect(null);
        break;
      }
      case T_IDLE:
        if (this.live && this.socketOpen) {
          this.send({ type: "ping" }, { kind: "ping" });
          this.setTimer(T_PONG, this.o.pongTimeoutMs);
        }
        break;
      case T_PONG:
        // Half-open: nothing heard, no pong. Drop it and resume on a new connection.
        this.endSocket(4000, "no pong", true);
        this.afterSocketGone();
        this.emitError({ code: "CONNECTION_LOST", message: "no pong from the server", fatal: false, retry: "reconnect" });
        this.scheduleReconnect(null);
        break;
      case T_REFRESH_AT:
        this.refreshDue = true;
        this.startRefresh();
        break;
      case T_REFRESH_RETRY:
        this.maybeSendRefresh();
        break;
      default:
        if (name.startsWith("rpc:")) {
          const id = Number(name.slice(4));
          const p = this.pending.get(id);
          if (p?.kind === "rpc") {
            this.pending.delete(id);
            this.reject(p.handle, "TIMEOUT", "no result in time");
          }
        }
    }
  }

  private armIdle(): void {
    if (!this.session) return;
    if (this.timers.has(T_PONG)) return; // a ping is out: its pong decides
    this.setTimer(T_IDLE, this.session.heartbeatMs);
  }

  private setTimer(name: string, ms: number): void {
    this.timers.add(name);
    this.out.push({ type: "setTimer", name, ms: Math.max(0, ms) });
  }

  private clearTimer(name: string): void {
    if (this.timers.delete(name)) this.out.push({ type: "clearTimer", name });
  }

  private stopTimer(name: string): void {
    this.clearTimer(name);
  }

  private stopAllTimers(): void {
    for (const name of [...this.timers]) this.clearTimer(name);
  }

  // ---- helpers ----

  /** The final stop: nothing reconnects, every timer is cleared, everything waiting fails. */
  private finish(closed: ClosedEvent): void {
    this.afterSocketGone();
    this.stopAllTimers();
    this.tokenInFlight = false;
    this.freshToken = null;
    this.session = null;
    const failure = closed.retry ? `stopped: ${closed.reason}` : closed.reason;
    this.rejectAll(this.connectWaiters, "CLOSED", failure);
    this.connectWaiters = [];
    for (const map of [this.joinWaiters, this.leaveWaiters]) {
      for (const [, handles] of map) this.rejectAll(handles, "CLOSED", failure);
      map.clear();
    }
    for (const h of this.logoutWaiters) this.resolve(h, undefined);
    this.logoutWaiters = [];
    this.setState("closed");
    this.out.push({ type: "emit", event: "closed", payload: closed });
  }

  private send(frame: Record<string, unknown>, pending: Pending): number {
    const id = this.nextId++;
    this.pending.set(id, pending);
    this.out.push({ type: "send", conn: this.conn, frame: { ...frame, id } });
    return id;
  }

  private sendJoin(channel: string): void {
    this.send({ type: "join", channel }, { kind: "join", channel });
  }

  private sendLeave(channel: string): void {
    this.send({ type: "leave", channel }, { kind: "leave", channel });
  }

  private setState(state: State): void {
    if (this.state === state) return;
    this.state = state;
    this.out.push({ type: "emit", event: "state", payload: state });
  }

  private emitError(error: ErrorEvent): void {
    this.out.push({ type: "emit", event: "error", payload: error });
  }

  private resolve(handle: number, value: unknown): void {
    this.out.push({ type: "resolve", handle, value });
  }

  private reject(handle: number, code: string, message: string, details?: unknown): void {
    const failure: Failure = { code, message };
    if (details !== undefined) failure.details = details;
    this.out.push({ type: "reject", handle, failure });
  }

  private rejectAll(handles: number[], code: string, message: string): void {
    for (const h of handles) this.reject(h, code, message);
  }

  private push(map: Map<string, number[]>, key: string, handle: number): void {
    const list = map.get(key);
    if (list) list.push(handle);
    else map.set(key, [handle]);
  }

  private settleAll(map: Map<string, number[]>, key: string, failure: Failure | undefined): void {
    const handles = map.get(key) ?? [];
    map.delete(key);
    for (const h of handles) {
      if (failure) this.reject(h, failure.code, failure.message, failure.details);
      else this.resolve(h, undefined);
    }
  }
}

function str(v: unknown): string {
  return typeof v === "string" ? v : "";
}

function num(v: unknown): number {
  return typeof v === "number" && Number.isFinite(v) ? v : 0;
}
