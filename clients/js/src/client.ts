// The driver: binds the pure Machine to a WebSocket, real (or injected) timers, getToken and
// the application's promises and listeners. No protocol decision is made here.

import { Machine, type Action, type Events, type Failure, type Input, type State } from "./machine.js";

/** The part of the WebSocket API the client uses (the browser's, Node's or the `ws` package's). */
export interface WebSocketLike {
  readonly readyState: number;
  onopen: ((ev: any) => void) | null;
  onmessage: ((ev: any) => void) | null;
  onclose: ((ev: any) => void) | null;
  onerror: ((ev: any) => void) | null;
  send(data: string): void;
  close(code?: number, reason?: string): void;
}

export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export interface BackoffOptions {
  /** First ceiling of the full-jitter backoff [250 ms]. */
  baseMs?: number;
  /** Largest ceiling [30 s]. */
  capMs?: number;
}

export interface WsAuthClientOptions {
  url: string;
  /** Called before each authentication and refresh; must resolve to a JWT. */
  getToken: () => Promise<string>;
  /** Default `globalThis.WebSocket`; in Node < 22 pass the `ws` package's class. */
  WebSocket?: WebSocketConstructor;
  backoff?: BackoffOptions;
  getTokenTimeoutMs?: number;
  rpcTimeoutMs?: number;
  pongTimeoutMs?: number;
  random?: () => number;
  now?: () => number;
  setTimeout?: (fn: () => void, ms: number) => unknown;
  clearTimeout?: (handle: any) => void;
}

export interface RpcOptions {
  timeoutMs?: number;
}

/** How a request (`rpc`, `publish`, `join`, `leave`, `connect`) failed. */
export class RpcError extends Error {
  readonly code: string;
  readonly details: unknown;
  constructor(code: string, message: string, details?: unknown) {
    super(message);
    this.name = "RpcError";
    this.code = code;
    this.details = details;
  }
}

declare function queueMicrotask(callback: () => void): void;

type Listener<K extends keyof Events> = (payload: Events[K]) => void;

export class WsAuthClient {
  private readonly machine: Machine;
  private readonly opts: WsAuthClientOptions;
  private readonly WS: WebSocketConstructor;
  private readonly setT: (fn: () => void, ms: number) => unknown;
  private readonly clearT: (handle: any) => void;
  private readonly timers = new Map<string, unknown>();
  private readonly sockets = new Map<number, WebSocketLike>();
  private readonly listeners = new Map<keyof Events, Set<(payload: any) => void>>();
  private readonly promises = new Map<number, { resolve: (v: any) => void; reject: (e: unknown) => void }>();
  private nextHandle = 1;
  private queue: Input[] = [];
  private running = false;

  constructor(options: WsAuthClientOptions) {
    this.opts = options;
    const g = globalThis as any;
    const WS = options.WebSocket ?? (g.WebSocket as WebSocketConstructor | undefined);
    if (!WS) throw new TypeError("no WebSocket implementation: pass options.WebSocket (e.g. the `ws` package)");
    this.WS = WS;
    this.setT = options.setTimeout ?? ((fn, ms) => g.setTimeout(fn, ms));
    this.clearT = options.clearTimeout ?? ((h) => g.clearTimeout(h));
    const machineOptions: ConstructorParameters<typeof Machine>[0] = {
      now: options.now ?? Date.now,
      random: options.random ?? Math.random,
    };
    if (options.backoff?.baseMs !== undefined) machineOptions.backoffBaseMs = options.backoff.baseMs;
    if (options.backoff?.capMs !== undefined) machineOptions.backoffCapMs = options.backoff.capMs;
    if (options.getTokenTimeoutMs !== undefined) machineOptions.getTokenTimeoutMs = options.getTokenTimeoutMs;
    if (options.rpcTimeoutMs !== undefined) machineOptions.rpcTimeoutMs = options.rpcTimeoutMs;
    if (options.pongTimeoutMs !== undefined) machineOptions.pongTimeoutMs = options.pongTimeoutMs;
    this.machine = new Machine(machineOptions);
    // Browsers: going offline is a transient disconnect (4000, resumable).
    if (typeof g.addEventListener === "function" && typeof g.navigator === "object") {
      this.offline = () => this.feed({ type: "offline" });
      this.online = () => this.feed({ type: "online" });
      g.addEventListener("offline", this.offline);
      g.addEventListener("online", this.online);
    }
  }

  private offline: (() => void) | undefined;
  private online: (() => void) | undefined;

  private removeNetworkListeners(): void {
    const g = globalThis as any;
    if (this.offline) g.removeEventListener?.("offline", this.offline);
    if (this.online) g.removeEventListener?.("online", this.online);
    this.offline = this.online = undefined;
  }

  get state(): State {
    return this.machine.state;
  }
  get userId(): string | undefined {
    return this.machine.userId;
  }
  get sessionId(): string | undefined {
    return this.machine.sessionId;
  }

  /** Subscribes to an event; returns the function that unsubscribes. */
  on<K extends keyof Events>(event: K, listener: Listener<K>): () => void {
    let set = this.listeners.get(event);
    if (!set) this.listeners.set(event, (set = new Set()));
    set.add(listener);
    return () => {
      set!.delete(listener);
    };
  }

  /** Resolves once the client is live (authenticated or resumed). */
  connect(): Promise<void> {
    return this.request((handle) => ({ type: "connect", handle }));
  }

  /** Closes with 4000: the session stays resumable; `connect()` resumes it. */
  disconnect(): void {
    this.feed({ type: "disconnect" });
  }

  /** Final stop: closes with 1000 (the session ends), stops every timer. */
  close(): void {
    this.feed({ type: "close" });
  }

  /** Ends the session for good (the server closes with 1000); never reconnects. */
  logout(): Promise<void> {
    return this.request((handle) => ({ type: "logout", handle }));
  }

  join(channel: string): Promise<void> {
    return this.request((handle) => ({ type: "join", handle, channel }));
  }

  leave(channel: string): Promise<void> {
    return this.request((handle) => ({ type: "leave", handle, channel }));
  }

  publish(channel: string, data: unknown): Promise<void> {
    return this.request((handle) => ({ type: "publish", handle, channel, data }));
  }

  rpc<T = unknown>(method: string, data?: unknown, options: RpcOptions = {}): Promise<T> {
    return this.request((handle) => {
      const input: Input = { type: "rpc", handle, method, data };
      if (options.timeoutMs !== undefined) input.timeoutMs = options.timeoutMs;
      return input;
    });
  }

  // ---- plumbing ----

  private request<T>(make: (handle: number) => Input): Promise<T> {
    const handle = this.nextHandle++;
    const promise = new Promise<T>((resolve, reject) => this.promises.set(handle, { resolve, reject }));
    this.feed(make(handle));
    return promise;
  }

  /** Inputs are handled one at a time, also when an action causes another input. */
  private feed(input: Input): void {
    this.queue.push(input);
    if (this.running) return;
    this.running = true;
    try {
      while (this.queue.length > 0) {
        const next = this.queue.shift()!;
        for (const action of this.machine.handle(next)) this.perform(action);
      }
    } finally {
      this.running = false;
    }
  }

  private perform(action: Action): void {
    if (action.type === "emit" && action.event === "closed") this.removeNetworkListeners();
    switch (action.type) {
      case "open":
        this.open(action.conn);
        break;
      case "send": {
        const ws = this.sockets.get(action.conn);
        try {
          ws?.send(JSON.stringify(action.frame));
        } catch {
          // a socket closing under us: its close event follows
        }
        break;
      }
      case "close": {
        const ws = this.sockets.get(action.conn);
        this.sockets.delete(action.conn);
        if (ws) {
          detach(ws);
          ws.onerror = () => {}; // a late error of an abandoned socket is not an unhandled one
          try {
            const terminate = (ws as { terminate?: () => void }).terminate;
            if (action.abort && typeof terminate === "function") terminate.call(ws);
            else ws.close(action.code, action.reason);
          } catch {
            // already closed
          }
        }
        break;
      }
      case "setTimer": {
        const old = this.timers.get(action.name);
        if (old !== undefined) this.clearT(old);
        const name = action.name;
        this.timers.set(
          name,
          this.setT(() => {
            this.timers.delete(name);
            this.feed({ type: "timer", name });
          }, action.ms),
        );
        break;
      }
      case "clearTimer": {
        const old = this.timers.get(action.name);
        if (old !== undefined) this.clearT(old);
        this.timers.delete(action.name);
        break;
      }
      case "getToken":
        this.fetchToken(action.req);
        break;
      case "emit": {
        const set = this.listeners.get(action.event);
        if (set) {
          for (const listener of [...set]) {
            try {
              listener(action.payload);
            } catch (e) {
              // A listener's exception must not break the protocol; report it asynchronously.
              queueMicrotask(() => {
                throw e;
              });
            }
          }
        }
        break;
      }
      case "resolve": {
        const p = this.promises.get(action.handle);
        this.promises.delete(action.handle);
        p?.resolve(action.value);
        break;
      }
      case "reject": {
        const p = this.promises.get(action.handle);
        this.promises.delete(action.handle);
        p?.reject(toError(action.failure));
        break;
      }
    }
  }

  private open(conn: number): void {
    let ws: WebSocketLike;
    try {
      ws = new this.WS(this.opts.url, "wsauth.v1");
    } catch (e) {
      // An invalid URL or a refused construction: the attempt failed like a drop.
      queueMicrotask(() => this.feed({ type: "socketClose", conn, code: 1006, reason: String(e) }));
      return;
    }
    this.sockets.set(conn, ws);
    ws.onopen = () => this.feed({ type: "socketOpen", conn });
    ws.onmessage = (ev: { data: unknown }) => {
      const data = ev.data;
      if (typeof data === "string") this.feed({ type: "socketMessage", conn, text: data });
      // Binary frames are not part of the protocol: ignored.
    };
    ws.onerror = () => {
      // A close event always follows an error.
    };
    ws.onclose = (ev: { code?: number; reason?: string }) => {
      this.sockets.delete(conn);
      detach(ws);
      this.feed({ type: "socketClose", conn, code: ev.code ?? 1006, reason: ev.reason ?? "" });
    };
  }

  private fetchToken(req: number): void {
    let promise: Promise<string>;
    try {
      promise = Promise.resolve(this.opts.getToken());
    } catch (e) {
      promise = Promise.reject(e);
    }
    promise.then(
      (token) => {
        if (typeof token === "string" && token.length > 0) this.feed({ type: "tokenResult", req, ok: true, token });
        else this.feed({ type: "tokenResult", req, ok: false, error: "getToken resolved to no token" });
      },
      (e: unknown) => this.feed({ type: "tokenResult", req, ok: false, error: e instanceof Error ? e.message : String(e) }),
    );
  }
}

function detach(ws: WebSocketLike): void {
  ws.onopen = null;
  ws.onmessage = null;
  ws.onclose = null;
}

function toError(f: Failure): RpcError {
  return new RpcError(f.code, f.message, f.details);
}
