// Integration tests against the real server (target/debug/wsauth-server, or $WSAUTH_SERVER_BIN).
// A missing binary or redis-server is a visible skip: `WSAUTH-SKIPPED <test>: <why>` on
// stderr (the marker `cargo xtask test` counts; test-support/src/lib.rs).

import { test } from "node:test";
import assert from "node:assert/strict";
import { spawn, spawnSync, type ChildProcess } from "node:child_process";
import { createHmac, randomUUID } from "node:crypto";
import { existsSync } from "node:fs";
import http from "node:http";
import net from "node:net";
import path from "node:path";
import { fileURLToPath } from "node:url";
import WebSocket from "ws";

import { WsAuthClient, type Events } from "../src/index.js";

const MARKER = "WSAUTH-SKIPPED";
const SECRET = "integration-secret-0123456789abcdef";
const ADMIN_KEY = "admin-key-0123456789";
const API_KEY = "api-key-0123456789ab";

// dist-test/test/integration.test.js → the repository root is four levels up.
const here = path.dirname(fileURLToPath(import.meta.url));
const repo = path.resolve(here, "..", "..", "..", "..");
const serverBin = process.env.WSAUTH_SERVER_BIN ?? path.join(repo, "target", "debug", "wsauth-server");

function skip(name: string, why: string): void {
  process.stderr.write(`${MARKER} ${name}: ${why}\n`);
}

function haveServer(name: string): boolean {
  if (existsSync(serverBin)) return true;
  skip(name, `${serverBin} is missing (build it: cargo build -p wsauth-server, or set WSAUTH_SERVER_BIN)`);
  return false;
}

function mint(sub: string, lifetimeS: number): string {
  const now = Math.floor(Date.now() / 1000);
  const enc = (o: unknown) => Buffer.from(JSON.stringify(o)).toString("base64url");
  const head = enc({ alg: "HS256", typ: "JWT" });
  const body = enc({ sub, iat: now, exp: now + lifetimeS, jti: randomUUID(), channels: ["*"] });
  const sig = createHmac("sha256", SECRET).update(`${head}.${body}`).digest("base64url");
  return `${head}.${body}.${sig}`;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

async function until(what: string, cond: () => boolean, timeoutMs = 15_000): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

// ---- the server ----

interface Server {
  proc: ChildProcess;
  wsPort: number;
  adminPort: number;
  log: string[];
  stop(signal?: NodeJS.Signals): Promise<void>;
}

async function startServer(env: Record<string, string> = {}): Promise<Server> {
  const proc = spawn(serverBin, [], {
    env: {
      PATH: process.env.PATH ?? "",
      NO_COLOR: "1",
      WSAUTH_JWT__HS256_SECRET: SECRET,
      WSAUTH_ADMIN_KEY: ADMIN_KEY,
      WSAUTH_API_KEY: API_KEY,
      WSAUTH_LISTEN: "127.0.0.1:0",
      WSAUTH_ADMIN_LISTEN: "127.0.0.1:0",
      WSAUTH_SHUTDOWN_DRAIN_MS: "500",
      ...env,
    },
    stdio: ["ignore", "pipe", "pipe"],
  });
  const log: string[] = [];
  let exited = false;
  const exit = new Promise<void>((resolve) => proc.once("exit", () => ((exited = true), resolve())));
  const ports = await new Promise<{ ws: number; admin: number }>((resolve, reject) => {
    const onData = (chunk: Buffer) => {
      for (const raw of chunk.toString().split("\n")) {
        // eslint-disable-next-line no-control-regex
        const line = raw.replace(/\x1b\[[0-9;]*m/g, "");
        if (line) log.push(line);
        const m = /listening.*ws=\S+:(\d+).*admin=\S+:(\d+)/.exec(line);
        if (m) resolve({ ws: Number(m[1]), admin: Number(m[2]) });
      }
    };
    proc.stdout!.on("data", onData);
    proc.stderr!.on("data", onData);
    proc.once("exit", (code) => reject(new Error(`server exited (${code}):\n${log.join("\n")}`)));
  });
  return {
    proc,
    wsPort: ports.ws,
    adminPort: ports.admin,
    log,
    async stop(signal: NodeJS.Signals = "SIGTERM") {
      if (exited) return;
      proc.kill(signal);
      const t = setTimeout(() => proc.kill("SIGKILL"), 5000);
      await exit;
      clearTimeout(t);
    },
  };
}

function post(port: number, urlPath: string, key: string, body: unknown): Promise<{ status: number; json: any }> {
  return new Promise((resolve, reject) => {
    const data = JSON.stringify(body);
    const req = http.request(
      {
        host: "127.0.0.1",
        port,
        path: urlPath,
        method: "POST",
        agent: false,
        headers: { "content-type": "application/json", authorization: `Bearer ${key}`, "content-length": Buffer.byteLength(data) },
      },
      (res) => {
        let text = "";
        res.on("data", (c) => (text += c));
        res.on("end", () => resolve({ status: res.statusCode ?? 0, json: text ? JSON.parse(text) : null }));
      },
    );
    req.on("error", reject);
    req.end(data);
  });
}

// ---- a TCP proxy that can drop every connection and be repointed ----

class Proxy {
  private server = net.createServer((client) => this.accept(client));
  private sockets = new Set<net.Socket>();
  private pairs = new Set<{ frozen: boolean }>();
  port = 0;
  connections = 0;
  constructor(public target: number) {}

  async listen(): Promise<void> {
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", r));
    this.port = (this.server.address() as net.AddressInfo).port;
  }

  private accept(client: net.Socket): void {
    this.connections += 1;
    const upstream = net.connect(this.target, "127.0.0.1");
    for (const s of [client, upstream]) {
      this.sockets.add(s);
      s.on("error", () => {});
      s.on("close", () => {
        this.sockets.delete(s);
        client.destroy();
        upstream.destroy();
      });
    }
    const pair = { frozen: false };
    this.pairs.add(pair);
    client.on("close", () => this.pairs.delete(pair));
    client.on("data", (d) => pair.frozen || upstream.write(d));
    upstream.on("data", (d) => pair.frozen || client.write(d));
  }

  /** The open connections go silent both ways but stay open: a half-open connection. */
  freezeAll(): void {
    for (const pair of this.pairs) pair.frozen = true;
  }

  /** Every connection dies at once, with no close frame (the client sees 1006). */
  dropAll(): void {
    for (const s of this.sockets) s.destroy();
  }

  async close(): Promise<void> {
    this.dropAll();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

// ---- a client that records what happens ----

interface Recorded {
  client: WsAuthClient;
  events: { event: keyof Events; payload: any; at: number }[];
  of<K extends keyof Events>(event: K): Events[K][];
  tokens: number;
  sockets: number;
}

function recordedClient(url: string, sub: string, lifetimeS: number, extra: { pongTimeoutMs?: number } = {}): Recorded {
  const r: Recorded = {
    client: undefined as unknown as WsAuthClient,
    events: [],
    of: (event) => r.events.filter((e) => e.event === event).map((e) => e.payload),
    tokens: 0,
    sockets: 0,
  };
  class CountingWebSocket extends WebSocket {
    constructor(address: string, protocols?: string | string[]) {
      super(address, protocols);
      r.sockets += 1;
    }
  }
  r.client = new WsAuthClient({
    url,
    getToken: async () => {
      r.tokens += 1;
      return mint(sub, lifetimeS);
    },
    WebSocket: CountingWebSocket,
    ...extra,
  });
  for (const event of ["state", "message", "gap", "expiring", "error", "closed", "session"] as const) {
    r.client.on(event, (payload: any) => r.events.push({ event, payload, at: Date.now() }));
  }
  return r;
}

// ---- the tests ----

test("(a) a session lives through 5 token refreshes", { timeout: 60_000 }, async (t) => {
  if (!haveServer("(a) refreshes")) return;
  const server = await startServer({ WSAUTH_SESSION__REFRESH_NOTICE_MS: "2000", WSAUTH_JWT__LEEWAY_S: "0" });
  const r = recordedClient(`ws://127.0.0.1:${server.wsPort}/ws`, "alice", 4);
  try {
    const start = Date.now();
    await r.client.connect();
    const sessionId = r.client.sessionId;
    await r.client.join("room:a");
    await until("5 expiring notices", () => r.of("expiring").length >= 5, 30_000);
    // The fifth refresh answered: the token handed out after the fifth notice is in use.
    await sleep(1500);
    assert.equal(r.client.state, "live");
    assert.equal(r.client.sessionId, sessionId, "the same session throughout");
    assert.equal(r.of("session").length, 1, "never re-authenticated or resumed");
    assert.ok(r.tokens >= 6, `1 auth + 5 refreshes: ${r.tokens} tokens`);
    assert.equal(r.sockets, 1, "one connection");
    assert.deepEqual(r.of("error"), []);
    // The session outlived its first token (exp 4 s, leeway 0) several times.
    const lived = Date.now() - start;
    assert.ok(lived > 4 * 2000, `lived ${lived} ms`);
    const res = await post(server.adminPort, "/api/publish", API_KEY, { channel: "room:a", data: "still here" });
    assert.equal(res.json.sessions, 1);
    await until("the message", () => r.of("message").length === 1);
    const gaps = r.events.filter((e) => e.event === "expiring").map((e, i, a) => (i ? e.at - a[i - 1]!.at : 0));
    t.diagnostic(`lived ${lived} ms on 4-second tokens; ${r.tokens} tokens; intervals between notices ${gaps.slice(1).join(", ")} ms`);
  } finally {
    r.client.close();
    await server.stop();
  }
});

test("(b) every connection dropped by a proxy: the client resumes, nothing lost or duplicated", { timeout: 60_000 }, async (t) => {
  if (!haveServer("(b) drops")) return;
  const server = await startServer();
  const proxy = new Proxy(server.wsPort);
  await proxy.listen();
  const r = recordedClient(`ws://127.0.0.1:${proxy.port}/ws`, "bob", 3600);
  try {
    await r.client.connect();
    await r.client.join("room:b");
    const N = 60;
    const drops = [10, 25, 26, 40];
    for (let i = 1; i <= N; i += 1) {
      if (drops.includes(i)) proxy.dropAll();
      const res = await post(server.adminPort, "/api/publish", API_KEY, { channel: "room:b", data: { n: i } });
      assert.equal(res.status, 200);
      await sleep(30);
    }
    await until(`${N} messages`, () => r.of("message").length >= N, 20_000);
    await sleep(300);
    const got = r.of("message").map((m) => (m.data as { n: number }).n);
    assert.deepEqual(got, Array.from({ length: N }, (_, i) => i + 1), "each message once, in order");
    const seqs = r.of("message").map((m) => m.seq);
    assert.ok(seqs.every((s, i) => i === 0 || s > seqs[i - 1]!), "seq increasing");
    const kinds = r.of("session").map((s) => s.kind);
    assert.equal(kinds[0], "authenticated");
    assert.ok(kinds.slice(1).every((k) => k === "resumed"), `only resumes: ${kinds}`);
    assert.ok(kinds.length >= 2, `resumed at least once: ${kinds}`);
    assert.deepEqual(r.of("gap"), []);
    t.diagnostic(`${N} messages, ${drops.length} drops, ${kinds.length - 1} resumes over ${proxy.connections} connections`);
  } finally {
    r.client.close();
    await proxy.close();
    await server.stop();
  }
});

test("(c1) server restarted on the memory store: SESSION_NOT_FOUND, then auth anew and re-join", { timeout: 60_000 }, async (t) => {
  if (!haveServer("(c1) memory restart")) return;
  const first = await startServer();
  const proxy = new Proxy(first.wsPort);
  await proxy.listen();
  const r = recordedClient(`ws://127.0.0.1:${proxy.port}/ws`, "carol", 3600);
  let second: Server | undefined;
  try {
    await r.client.connect();
    await r.client.join("room:c");
    const oldSession = r.client.sessionId;
    second = await startServer();
    proxy.target = second.wsPort;
    const stopped = Date.now();
    await first.stop("SIGTERM"); // close 1001 to the client: first wait in [0, 5 s]
    await until("re-authenticated", () => r.of("session").some((s) => s.kind === "reauthenticated"), 30_000);
    const took = Date.now() - stopped;
    assert.notEqual(r.client.sessionId, oldSession);
    assert.ok(r.of("error").some((e) => e.code === "SESSION_NOT_FOUND"), "the resume was refused first");
    // Re-joined: a message published on the new server reaches the client.
    let sessions = 0;
    for (let i = 0; i < 100 && sessions < 1; i += 1) {
      sessions = (await post(second.adminPort, "/api/publish", API_KEY, { channel: "room:c", data: "after restart" })).json.sessions;
      if (sessions < 1) await sleep(50);
    }
    assert.equal(sessions, 1);
    await until("the message", () => r.of("message").some((m) => m.data === "after restart"));
    assert.equal(r.of("closed").length, 0);
    t.diagnostic(`re-authenticated ${took} ms after the server stopped`);
  } finally {
    r.client.close();
    await proxy.close();
    await first.stop();
    await second?.stop();
  }
});

test("(c2) two servers on one Redis: the first killed, the client resumes on the second", { timeout: 60_000 }, async (t) => {
  if (!haveServer("(c2) redis failover")) return;
  const which = spawnSync("redis-server", ["--version"], { stdio: "ignore" });
  if (which.error || which.status !== 0) {
    skip("(c2) redis failover", "redis-server is not on PATH");
    return;
  }
  const redisPort = await freePort();
  const redis = spawn("redis-server", ["--port", String(redisPort), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], {
    stdio: "ignore",
  });
  const redisExit = new Promise<void>((r) => redis.once("exit", () => r()));
  let a: Server | undefined;
  let b: Server | undefined;
  let proxy: Proxy | undefined;
  let r: Recorded | undefined;
  try {
    for (let i = 0; ; i += 1) {
      const ok = await new Promise<boolean>((res) => {
        const s = net.connect(redisPort, "127.0.0.1", () => (s.destroy(), res(true)));
        s.on("error", () => res(false));
      });
      if (ok) break;
      if (i > 100) throw new Error("redis did not start");
      await sleep(50);
    }
    const store = { WSAUTH_STORE__KIND: "redis", WSAUTH_STORE__URL: `redis://127.0.0.1:${redisPort}` };
    a = await startServer({ ...store, WSAUTH_NODE_ID: "node-a" });
    b = await startServer({ ...store, WSAUTH_NODE_ID: "node-b" });
    proxy = new Proxy(a.wsPort);
    await proxy.listen();
    r = recordedClient(`ws://127.0.0.1:${proxy.port}/ws`, "dave", 3600);
    await r.client.connect();
    await r.client.join("room:d");
    const sessionId = r.client.sessionId;
    await post(a.adminPort, "/api/publish", API_KEY, { channel: "room:d", data: 1 });
    await until("message 1", () => r!.of("message").length === 1);
    proxy.target = b.wsPort;
    const killed = Date.now();
    await a.stop("SIGKILL");
    await until("resumed", () => r!.of("session").some((s) => s.kind === "resumed"), 20_000);
    const took = Date.now() - killed;
    assert.equal(r.client.sessionId, sessionId, "the same session, on the second node");
    const res = await post(b.adminPort, "/api/publish", API_KEY, { channel: "room:d", data: 2 });
    assert.equal(res.json.sessions, 1, "still joined to room:d");
    await until("message 2", () => r!.of("message").length === 2);
    assert.deepEqual(r.of("message").map((m) => m.data), [1, 2]);
    t.diagnostic(`resumed on node-b ${took} ms after node-a was killed`);
  } finally {
    r?.client.close();
    await proxy?.close();
    await a?.stop();
    await b?.stop();
    redis.kill("SIGKILL");
    await redisExit;
  }
});

test("(d) the user revoked: closed with retry none, no reconnection", { timeout: 60_000 }, async () => {
  if (!haveServer("(d) revocation")) return;
  const server = await startServer();
  const r = recordedClient(`ws://127.0.0.1:${server.wsPort}/ws`, "eve", 3600);
  try {
    await r.client.connect();
    const res = await post(server.adminPort, "/admin/revoke", ADMIN_KEY, { sub: "eve" });
    assert.equal(res.status, 200);
    assert.equal(res.json.revoked, 1);
    await until("closed", () => r.of("closed").length === 1, 10_000);
    const closed = r.of("closed")[0]!;
    assert.equal(closed.retry, "none");
    assert.equal(closed.code, 4403);
    assert.equal(r.client.state, "closed");
    assert.ok(r.of("error").some((e) => e.code === "TOKEN_REVOKED" && e.fatal));
    const sockets = r.sockets;
    const tokens = r.tokens;
    await sleep(2000);
    assert.equal(r.sockets, sockets, "no reconnection");
    assert.equal(r.tokens, tokens, "no new token asked for");
  } finally {
    r.client.close();
    await server.stop();
  }
});

test("(e) half-open: pings answered by pongs keep a quiet session; a silent connection is dropped and resumed", { timeout: 60_000 }, async (t) => {
  if (!haveServer("(e) ping/pong")) return;
  const server = await startServer({ WSAUTH_SESSION__HEARTBEAT_MS: "300" });
  const proxy = new Proxy(server.wsPort);
  await proxy.listen();
  const r = recordedClient(`ws://127.0.0.1:${proxy.port}/ws`, "frank", 3600, { pongTimeoutMs: 1000 });
  try {
    await r.client.connect();
    await r.client.join("room:e");
    await sleep(2000); // quiet: ~6 pings, each answered
    assert.equal(r.client.state, "live", JSON.stringify({ closed: r.of("closed"), errors: r.of("error") }));
    assert.equal(r.sockets, 1, "pongs keep the connection");
    assert.deepEqual(r.of("error"), []);
    const frozenAt = Date.now();
    proxy.freezeAll();
    await until("the half-open connection noticed", () => r.of("error").some((e) => e.code === "CONNECTION_LOST"), 10_000);
    const noticed = Date.now() - frozenAt;
    await until("resumed", () => r.of("session").some((s) => s.kind === "resumed"), 10_000);
    const res = await post(server.adminPort, "/api/publish", API_KEY, { channel: "room:e", data: "after" });
    assert.equal(res.json.sessions, 1);
    await until("the message", () => r.of("message").length === 1);
    // heartbeat 300 ms of silence, then at most 1000 ms for the pong; the bound is
    // generous (a busy machine delays timers), the figure goes to the diagnostics.
    assert.ok(noticed <= 300 + 1000 + 5000, `noticed after ${noticed} ms`);
    t.diagnostic(`a silent connection was noticed after ${noticed} ms (heartbeat 300, pong bound 1000) and resumed`);
  } finally {
    r.client.close();
    await proxy.close();
    await server.stop();
  }
});
