// A fake clock and a fake WebSocket for the unit tests: the client runs with no real timer
// and no network, and a test plays the server.

import { WsAuthClient, type WebSocketLike, type WsAuthClientOptions } from "../src/index.js";

interface FakeTimer {
  id: number;
  at: number;
  ms: number;
  fn: () => void;
}

export class FakeClock {
  t = 1_767_225_600_000;
  private nextId = 1;
  timers = new Map<number, FakeTimer>();
  /** Every delay ever set, in order (for backoff checks). */
  delays: number[] = [];

  now = (): number => this.t;
  setTimeout = (fn: () => void, ms: number): number => {
    const id = this.nextId++;
    this.timers.set(id, { id, at: this.t + ms, ms, fn });
    this.delays.push(ms);
    return id;
  };
  clearTimeout = (id: number): void => {
    this.timers.delete(id);
  };

  pending(): number {
    return this.timers.size;
  }

  /** Moves time forward by `ms`, firing due timers in order. */
  async advance(ms: number): Promise<void> {
    const end = this.t + ms;
    for (;;) {
      let next: FakeTimer | undefined;
      for (const timer of this.timers.values()) if (timer.at <= end && (!next || timer.at < next.at)) next = timer;
      if (!next) break;
      this.timers.delete(next.id);
      this.t = Math.max(this.t, next.at);
      next.fn();
      await flush();
    }
    this.t = end;
    await flush();
  }
}

export function flush(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

export class FakeSocket implements WebSocketLike {
  readyState = 0;
  onopen: ((ev: any) => void) | null = null;
  onmessage: ((ev: any) => void) | null = null;
  onclose: ((ev: any) => void) | null = null;
  onerror: ((ev: any) => void) | null = null;
  sent: Record<string, any>[] = [];
  closedWith: { code?: number; reason?: string } | null = null;
  terminated = false;
  /** Answer the client's pings as the server does. */
  autoPong = true;

  constructor(
    readonly url: string,
    readonly protocols?: string | string[],
  ) {}

  send(data: string): void {
    if (this.readyState !== 1) throw new Error("not open");
    const frame = JSON.parse(data);
    this.sent.push(frame);
    if (frame.type === "ping" && this.autoPong) this.recv({ type: "pong", id: frame.id });
  }
  close(code?: number, reason?: string): void {
    this.closedWith = { code, reason };
    this.readyState = 3;
  }
  terminate(): void {
    this.terminated = true;
    this.closedWith = { code: 1006 };
    this.readyState = 3;
  }

  // ---- the server's side ----
  open(): void {
    this.readyState = 1;
    this.onopen?.({});
  }
  recv(frame: Record<string, unknown>): void {
    this.onmessage?.({ data: JSON.stringify(frame) });
  }
  /** The server closes (or the network drops: 1006). */
  drop(code = 1006, reason = ""): void {
    this.readyState = 3;
    this.onclose?.({ code, reason });
  }
  last(): Record<string, any> {
    return this.sent[this.sent.length - 1]!;
  }
  ofType(type: string): Record<string, any>[] {
    return this.sent.filter((f) => f.type === type);
  }
}

export interface Harness {
  client: WsAuthClient;
  clock: FakeClock;
  sockets: FakeSocket[];
  tokenCalls: number;
  /** What the next getToken calls do; default: resolve "tok<n>". */
  tokenImpl: (n: number) => Promise<string>;
  events: { event: string; payload: any }[];
  of(event: string): any[];
  socket(): FakeSocket;
}

export function harness(extra: Partial<WsAuthClientOptions> = {}, random: () => number = seeded(42)): Harness {
  const clock = new FakeClock();
  const sockets: FakeSocket[] = [];
  const h: Harness = {
    client: undefined as unknown as WsAuthClient,
    clock,
    sockets,
    tokenCalls: 0,
    tokenImpl: (n) => Promise.resolve(`tok${n}`),
    events: [],
    of: (event) => h.events.filter((e) => e.event === event).map((e) => e.payload),
    socket: () => sockets[sockets.length - 1]!,
  };
  class WS extends FakeSocket {
    constructor(url: string, protocols?: string | string[]) {
      super(url, protocols);
      sockets.push(this);
    }
  }
  h.client = new WsAuthClient({
    url: "ws://test/ws",
    getToken: () => {
      h.tokenCalls += 1;
      return h.tokenImpl(h.tokenCalls);
    },
    WebSocket: WS,
    random,
    now: clock.now,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    ...extra,
  });
  for (const event of ["state", "message", "gap", "expiring", "error", "closed", "session"] as const) {
    h.client.on(event, (payload: any) => h.events.push({ event, payload }));
  }
  return h;
}

/** A deterministic generator in [0, 1). */
export function seeded(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function authenticated(
  h: Harness,
  id: number,
  over: Record<string, unknown> = {},
): Record<string, unknown> {
  return {
    type: "authenticated",
    id,
    session_id: "s1",
    resume_token: "r1",
    user_id: "alice",
    expires_at: h.clock.t + 3_600_000,
    heartbeat_ms: 25_000,
    protocol: "wsauth.v1",
    ...over,
  };
}

/** connect() through auth to live; returns the socket. */
export async function goLive(h: Harness, over: Record<string, unknown> = {}): Promise<FakeSocket> {
  const connected = h.client.connect();
  await flush();
  const ws = h.socket();
  ws.open();
  const auth = ws.last();
  ws.recv(authenticated(h, auth.id, over));
  await connected;
  return ws;
}

/** Waits out the backoff and opens the next socket; returns it (not yet answered). */
export async function nextSocket(h: Harness, maxWaitMs = 60_000): Promise<FakeSocket> {
  const before = h.sockets.length;
  for (let waited = 0; h.sockets.length === before && waited < maxWaitMs; waited += 50) {
    await h.clock.advance(50);
  }
  if (h.sockets.length === before) throw new Error("no reconnection");
  const ws = h.socket();
  ws.open();
  return ws;
}
