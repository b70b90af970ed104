// A stand-in for @wsauth/client with the same API, for manual checks of the chat
// page before clients/js is built. Not used by the tests, which use the real
// clients/js/dist/index.js. Minimal: auth, refresh on `expiring`, resume after a
// drop (a new session when that fails), join, leave, rpc.

export class RpcError extends Error {
  constructor(code, message, details) {
    super(message);
    this.code = code;
    this.details = details;
  }
}

export class WsAuthClient {
  constructor({ url, getToken }) {
    this.url = url;
    this.getToken = getToken;
    this.handlers = {};
    this.nextId = 1;
    this.pending = new Map();
    this.session = null;
    this.lastSeq = 0;
    this.stopped = false;
    this.state = "idle";
  }

  on(event, fn) {
    (this.handlers[event] ||= []).push(fn);
  }

  emit(event, value) {
    for (const fn of this.handlers[event] || []) fn(value);
  }

  setState(s) {
    this.state = s;
    this.emit("state", s);
  }

  connect() {
    this.stopped = false;
    return this.open(false);
  }

  open(again) {
    this.setState(again ? "reconnecting" : "connecting");
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, "wsauth.v1");
      this.ws = ws;
      ws.onopen = async () => {
        this.setState("authenticating");
        const id = this.nextId++;
        if (this.session) {
          ws.send(JSON.stringify({ type: "resume", id, ...this.session, last_seq: this.lastSeq }));
        } else {
          ws.send(JSON.stringify({ type: "auth", id, token: await this.getToken() }));
        }
        this.pending.set(id, {
          resolve: (m) => {
            const kind = m.type === "resumed" ? "resumed" : again ? "reauthenticated" : "authenticated";
            if (m.type === "authenticated") this.lastSeq = 0;
            this.session = { session_id: m.session_id, resume_token: m.resume_token };
            this.userId = m.user_id || this.userId;
            this.setState("live");
            this.emit("session", { kind, sessionId: m.session_id, userId: this.userId });
            resolve();
          },
          reject: (e) => {
            if (e.code === "SESSION_NOT_FOUND") this.session = null;
            reject(e);
          },
        });
      };
      ws.onmessage = (e) => this.frame(JSON.parse(e.data));
      ws.onclose = (e) => {
        for (const p of this.pending.values()) p.reject(new RpcError("UNAVAILABLE", "connection lost"));
        this.pending.clear();
        this.emit("closed", { code: e.code, retry: e.code === 1000 ? "none" : "reconnect", reason: e.reason });
        if (this.stopped || e.code === 1000) {
          this.setState("closed");
          return;
        }
        this.setState("reconnecting");
        setTimeout(() => this.open(true).catch(() => {}), 300);
      };
    });
  }

  frame(m) {
    if (m.type === "message") {
      if (m.seq <= this.lastSeq) return;
      this.lastSeq = m.seq;
      this.emit("message", { channel: m.channel, seq: m.seq, from: m.from, data: m.data });
      return;
    }
    if (m.type === "expiring") {
      Promise.resolve(this.getToken()).then((token) =>
        this.ws.send(JSON.stringify({ type: "refresh", id: this.nextId++, token })),
      );
      return;
    }
    if (m.type === "resumed" && m.resume_token) this.session = { session_id: m.session_id, resume_token: m.resume_token };
    const p = m.id !== undefined ? this.pending.get(m.id) : undefined;
    if (!p) return;
    this.pending.delete(m.id);
    if (m.type === "error") p.reject(new RpcError(m.code, m.message, m.details));
    else p.resolve(m);
  }

  request(frame) {
    const id = this.nextId++;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify({ ...frame, id }));
    });
  }

  async join(channel) {
    await this.request({ type: "join", channel });
  }

  async leave(channel) {
    await this.request({ type: "leave", channel });
  }

  async rpc(method, data) {
    const answer = await this.request({ type: "rpc", method, data });
    return answer.data;
  }

  disconnect() {
    this.ws?.close(4000);
  }

  async logout() {
    this.stopped = true;
    this.ws?.send(JSON.stringify({ type: "logout" }));
  }

  close() {
    this.stopped = true;
    this.ws?.close(1000);
  }
}
