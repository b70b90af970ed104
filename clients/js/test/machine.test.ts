// Unit tests of the protocol machine, through the driver, with a fake clock and socket.

import { test } from "node:test";
import assert from "node:assert/strict";

import { Machine, RpcError, backoffDelay, hintForClose, type Action } from "../src/index.js";
import { authenticated, flush, goLive, harness, nextSocket, seeded, type Harness } from "./fakes.js";

function resumed(id: number, over: Record<string, unknown> = {}): Record<string, unknown> {
  return {
    type: "resumed",
    id,
    session_id: "s1",
    resume_token: "r2",
    expires_at: Date.UTC(2026, 0, 1, 1),
    channels: [],
    replayed: 0,
    gap: false,
    ...over,
  };
}

function fatal(code: string, retry: string): Record<string, unknown> {
  return { type: "error", code, message: code.toLowerCase(), fatal: true, retry };
}

async function assertQuiet(h: Harness, ms = 120_000): Promise<void> {
  const sockets = h.sockets.length;
  const calls = h.tokenCalls;
  await h.clock.advance(ms);
  assert.equal(h.sockets.length, sockets, "no new socket");
  assert.equal(h.tokenCalls, calls, "no getToken");
}

test("connect: getToken before the socket, then auth by message; live", async () => {
  const h = harness();
  const connected = h.client.connect();
  assert.equal(h.tokenCalls, 1);
  assert.equal(h.sockets.length, 0, "the socket waits for the token");
  await flush();
  assert.equal(h.sockets.length, 1);
  assert.deepEqual(h.socket().protocols, "wsauth.v1");
  h.socket().open();
  const auth = h.socket().last();
  assert.deepEqual(auth, { type: "auth", token: "tok1", id: auth.id });
  assert.equal(typeof auth.id, "number");
  h.socket().recv(authenticated(h, auth.id));
  await connected;
  assert.equal(h.client.state, "live");
  assert.equal(h.client.userId, "alice");
  assert.equal(h.client.sessionId, "s1");
  assert.deepEqual(h.of("session"), [{ kind: "authenticated", sessionId: "s1", userId: "alice" }]);
  assert.deepEqual(h.of("state"), ["connecting", "authenticating", "live"]);
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("retry none (TOKEN_REVOKED, 4403): closed with retry none, never reconnects", async () => {
  const h = harness();
  const ws = await goLive(h);
  ws.recv(fatal("TOKEN_REVOKED", "none"));
  ws.drop(4403, "revoked");
  assert.equal(h.client.state, "closed");
  assert.equal(h.of("closed").length, 1);
  assert.equal(h.of("closed")[0].retry, "none");
  assert.equal(h.of("closed")[0].code, 4403);
  assert.equal(h.clock.pending(), 0);
  await assertQuiet(h);
  await assert.rejects(h.client.connect(), (e: RpcError) => e.code === "CLOSED");
});

test("retry reauth (SESSION_EXPIRED): fresh token, new auth, channels re-joined; a second failure gives up", async () => {
  const h = harness();
  const ws = await goLive(h);
  const joined = h.client.join("room:lobby");
  ws.recv({ type: "joined", id: ws.last().id, channel: "room:lobby" });
  await joined;
  ws.recv(fatal("SESSION_EXPIRED", "reauth"));
  ws.drop(4401);
  assert.equal(h.client.state, "reconnecting");
  const calls = h.tokenCalls;
  const ws2 = await nextSocket(h);
  assert.equal(h.tokenCalls, calls + 1, "a fresh token first");
  assert.equal(ws2.sent[0]!.type, "auth");
  assert.equal(ws2.sent[0]!.token, `tok${calls + 1}`);
  ws2.recv(authenticated(h, ws2.sent[0]!.id, { session_id: "s2", resume_token: "q1" }));
  assert.deepEqual(h.of("session").at(-1), { kind: "reauthenticated", sessionId: "s2", userId: "alice" });
  assert.deepEqual(
    ws2.ofType("join").map((f) => f.channel),
    ["room:lobby"],
  );

  // The new session expires too; its reauth fails again: give up.
  ws2.recv(fatal("SESSION_EXPIRED", "reauth"));
  ws2.drop(4401);
  const ws3 = await nextSocket(h);
  assert.equal(ws3.sent[0]!.type, "auth");
  ws3.recv({ ...fatal("TOKEN_EXPIRED", "reauth"), id: ws3.sent[0]!.id });
  ws3.drop(4401);
  assert.equal(h.client.state, "closed");
  assert.equal(h.of("closed").at(-1).retry, "reauth");
  assert.equal(h.clock.pending(), 0);
  await assertQuiet(h);
});

test("retry reconnect (RATE_LIMITED): backoff, resume with the latest resume token and last_seq; nothing resent", async () => {
  const h = harness();
  const ws = await goLive(h);
  ws.recv({ type: "message", channel: "c", seq: 1, from: "bob", data: 1 });
  ws.recv({ type: "message", channel: "c", seq: 2, from: "bob", data: 2 });
  const published = h.client.publish("c", { x: 1 });
  ws.recv(fatal("RATE_LIMITED", "reconnect"));
  ws.drop(4429);
  await assert.rejects(published, (e: RpcError) => e.code === "DISCONNECTED");
  const ws2 = await nextSocket(h);
  assert.deepEqual(ws2.sent.map((f) => f.type), ["resume"]);
  assert.equal(ws2.sent[0]!.session_id, "s1");
  assert.equal(ws2.sent[0]!.resume_token, "r1");
  assert.equal(ws2.sent[0]!.last_seq, 2);
  ws2.recv(resumed(ws2.sent[0]!.id, { resume_token: "r2" }));
  assert.equal(h.client.state, "live");
  assert.deepEqual(h.of("session").at(-1).kind, "resumed");
  // The next resume uses the rotated token.
  ws2.drop(1006);
  const ws3 = await nextSocket(h);
  assert.equal(ws3.sent[0]!.resume_token, "r2");
  assert.equal(ws2.ofType("publish").length + ws3.ofType("publish").length, 0, "the publish is never resent");
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("every close code of protocol.md §6: what the client does after it", async () => {
  const table: [number, "stop" | "resume" | "auth"][] = [
    [1000, "stop"],
    [1001, "resume"],
    [1006, "resume"],
    [1007, "stop"],
    [1009, "resume"],
    [1011, "resume"],
    [1013, "resume"],
    [4400, "stop"],
    [4401, "auth"],
    [4403, "stop"],
    [4408, "resume"],
    [4409, "stop"],
    [4429, "resume"],
  ];
  for (const [code, expected] of table) {
    const h = harness();
    const ws = await goLive(h);
    ws.drop(code);
    if (expected === "stop") {
      assert.equal(h.client.state, "closed", `close ${code}`);
      assert.equal(h.of("closed").length, 1, `close ${code}`);
      assert.equal(h.clock.pending(), 0, `close ${code}`);
      await assertQuiet(h);
    } else {
      const ws2 = await nextSocket(h);
      assert.equal(ws2.sent[0]!.type, expected === "resume" ? "resume" : "auth", `close ${code}`);
      if (expected === "auth") assert.equal(h.tokenCalls, 2, `close ${code}: a fresh token`);
      assert.equal(h.of("closed").length, 0, `close ${code}`);
      h.client.close();
      assert.equal(h.clock.pending(), 0);
    }
    assert.equal(hintForClose(code), expected === "stop" ? "none" : expected === "auth" ? "reauth" : "reconnect");
  }
  // 4429 with TOO_MANY_SESSIONS (retry none) stops; 4401 with NOT_AUTHENTICATED (none) stops.
  for (const [code, error] of [
    [4429, "TOO_MANY_SESSIONS"],
    [4401, "NOT_AUTHENTICATED"],
  ] as const) {
    const h = harness();
    const ws = await goLive(h);
    ws.recv(fatal(error, "none"));
    ws.drop(code);
    assert.equal(h.client.state, "closed");
    assert.equal(h.of("closed")[0].retry, "none");
    await assertQuiet(h);
  }
});

test("refresh is single-flight under three coinciding triggers (timer + expiring + reconnect)", async () => {
  const h = harness();
  let release: (t: string) => void = () => {};
  h.tokenImpl = () => new Promise((resolve) => (release = resolve));
  const connected = h.client.connect();
  h.tokenImpl = (n) => Promise.resolve(`tok${n}`);
  release("tok1");
  await flush();
  h.socket().open();
  const expiresAt = h.clock.t + 120_000;
  h.socket().recv(authenticated(h, h.socket().last().id, { expires_at: expiresAt }));
  await connected;
  const ws = h.socket();

  h.tokenImpl = () => new Promise((resolve) => (release = resolve)); // hangs until released
  await h.clock.advance(60_000); // trigger 1: the client's own timer (lead = 60 s)
  assert.equal(h.tokenCalls, 2);
  ws.recv({ type: "expiring", expires_at: expiresAt, in_ms: 60_000 }); // trigger 2
  assert.equal(h.tokenCalls, 2);
  assert.deepEqual(h.of("expiring"), [{ expiresAt }]);
  ws.drop(1006); // trigger 3: a reconnection that needs a token before resuming
  await h.clock.advance(1000);
  assert.equal(h.tokenCalls, 2, "still the one getToken");
  assert.equal(h.sockets.length, 1, "the reconnection waits for that token");
  release("tokR");
  await flush();
  assert.equal(h.sockets.length, 2);
  const ws2 = h.socket();
  ws2.open();
  assert.equal(ws2.sent[0]!.type, "resume");
  ws2.recv(resumed(ws2.sent[0]!.id, { expires_at: expiresAt }));
  const refreshes = ws2.ofType("refresh");
  assert.equal(refreshes.length, 1);
  assert.equal(refreshes[0]!.token, "tokR");
  assert.equal(ws.ofType("refresh").length, 0);
  ws2.recv({ type: "refreshed", id: refreshes[0]!.id, expires_at: expiresAt + 3_600_000 });
  assert.equal(h.tokenCalls, 2);
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("a refresh that fails is retried with backoff and succeeds before expiry; never two in flight", async () => {
  const h = harness();
  const expiresAt = h.clock.t + 120_000;
  const ws = await goLive(h, { expires_at: expiresAt });
  ws.recv({ type: "expiring", expires_at: expiresAt, in_ms: 60_000 });
  await flush();
  const first = ws.ofType("refresh");
  assert.equal(first.length, 1);
  // The client's own timer fires meanwhile: no second refresh.
  await h.clock.advance(60_000);
  assert.equal(ws.ofType("refresh").length, 1);
  ws.recv({ type: "error", id: first[0]!.id, code: "INTERNAL", message: "store", fatal: false });
  assert.equal(h.of("error").at(-1).code, "INTERNAL");
  assert.equal(ws.ofType("refresh").length, 1, "not at once");
  await h.clock.advance(500); // the first backoff is at most 250 ms
  assert.equal(ws.ofType("refresh").length, 2);
  ws.recv({ type: "refreshed", id: ws.ofType("refresh")[1]!.id, expires_at: expiresAt + 3_600_000 });
  assert.ok(h.clock.t < expiresAt);
  assert.equal(h.client.state, "live");
  await h.clock.advance(30_000);
  assert.equal(ws.ofType("refresh").length, 2);
  h.client.close();
});

test("backoff: attempt n waits uniform in [0, min(cap, base·2^n)] (statistical)", () => {
  const random = seeded(7);
  for (let n = 0; n <= 12; n += 1) {
    const ceiling = Math.min(30_000, 250 * 2 ** n);
    const samples = Array.from({ length: 4000 }, () => backoffDelay(n, 250, 30_000, random));
    for (const s of samples) assert.ok(s >= 0 && s <= ceiling, `n=${n}: ${s} in [0, ${ceiling}]`);
    const mean = samples.reduce((a, b) => a + b, 0) / samples.length;
    assert.ok(Math.abs(mean - ceiling / 2) < ceiling * 0.05, `n=${n}: mean ${mean} near ${ceiling / 2}`);
    // Spread over the whole interval: every tenth of it is hit.
    const deciles = new Set(samples.map((s) => Math.min(9, Math.floor((s / ceiling) * 10))));
    assert.equal(deciles.size, 10, `n=${n}: all deciles`);
  }
});

test("backoff: failures before authenticated keep backing off and are reported; authenticated resets it", async () => {
  const h = harness({ backoff: { baseMs: 100, capMs: 1600 } }, () => 0.999999);
  const connected = h.client.connect();
  await flush();
  const waits: number[] = [];
  for (let i = 0; i < 8; i += 1) {
    h.socket().open(); // the socket opens: that resets nothing
    h.socket().drop(1006);
    const before = h.clock.delays.length;
    assert.equal(h.client.state, "reconnecting");
    waits.push(h.clock.delays.slice(before - 1)[0]!);
    await nextSocket(h).then((ws) => ws.drop(1006)).catch(() => {});
  }
  assert.ok(h.of("error").filter((e) => e.code === "CONNECT_FAILED").length >= 8, "each failure is reported");
  // Backoff delays that were set (the attempt timer is 15000, tokens 10000: filter them out).
  const backoffs = h.clock.delays.filter((d) => d !== 15_000 && d !== 10_000);
  for (let n = 0; n < backoffs.length; n += 1) {
    assert.ok(backoffs[n]! <= Math.min(1600, 100 * 2 ** n) + 1e-6, `wait ${n}: ${backoffs[n]}`);
  }
  assert.ok(backoffs.at(-1)! > 1500, "the ceiling grew to the cap");
  // Now it succeeds: the next drop starts from base again.
  await h.clock.advance(2000);
  const ws = h.socket();
  if (ws.readyState !== 1) ws.open();
  ws.recv(authenticated(h, ws.sent.find((f) => f.type === "auth")!.id));
  await connected;
  const before = h.clock.delays.length;
  ws.drop(1006);
  const after = h.clock.delays.slice(before).filter((d) => d !== 15_000 && d !== 10_000);
  assert.ok(after[0]! <= 100, `reset: ${after[0]}`);
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("after a server close 1001, 1011 or 1013 the first wait is uniform in [0, 5 s]", async () => {
  for (const code of [1001, 1011, 1013]) {
    for (const r of [0, 0.5, 0.999]) {
      const h = harness({}, () => r);
      const ws = await goLive(h);
      const before = h.clock.delays.length;
      ws.drop(code);
      const wait = h.clock.delays.slice(before).find((d) => d !== 15_000)!;
      assert.ok(Math.abs(wait - r * 5000) < 1e-6, `close ${code}, random ${r}: ${wait}`);
      h.client.close();
    }
  }
  // Spread: many clients' first waits cover [0, 5 s].
  const random = seeded(3);
  const waits: number[] = [];
  for (let i = 0; i < 200; i += 1) {
    const h = harness({}, random);
    const ws = await goLive(h);
    const before = h.clock.delays.length;
    ws.drop(1013);
    waits.push(h.clock.delays.slice(before).find((d) => d !== 15_000)!);
    h.client.close();
  }
  assert.ok(waits.every((w) => w >= 0 && w <= 5000));
  assert.ok(Math.min(...waits) < 500 && Math.max(...waits) > 4500, "spread over the interval");
});

test("seq: a duplicate after replay is dropped; a gap is reported; a new session counts from 1", async () => {
  const h = harness();
  const ws = await goLive(h);
  ws.recv({ type: "message", channel: "c", seq: 1, from: "bob", data: "a" });
  ws.recv({ type: "message", channel: "c", seq: 2, from: "bob", data: "b" });
  ws.drop(1006);
  const ws2 = await nextSocket(h);
  assert.equal(ws2.sent[0]!.last_seq, 2);
  ws2.recv(resumed(ws2.sent[0]!.id, { replayed: 2, gap: true }));
  assert.deepEqual(h.of("gap"), [{ lastSeq: 2 }]);
  ws2.recv({ type: "message", channel: "c", seq: 2, from: "bob", data: "b" }); // duplicate
  ws2.recv({ type: "message", channel: "c", seq: 3, from: "bob", data: "c" });
  ws2.recv({ type: "message", channel: "c", seq: 3, from: "bob", data: "c" }); // duplicate
  ws2.recv({ type: "message", channel: "c", seq: 5, data: "app" }); // a hole is not a gap
  assert.deepEqual(
    h.of("message").map((m) => m.seq),
    [1, 2, 3, 5],
  );
  assert.equal(h.of("message").at(-1).from, undefined);
  // The session is lost: the new one starts again at 1.
  ws2.recv(fatal("SESSION_EXPIRED", "reauth"));
  ws2.drop(4401);
  const ws3 = await nextSocket(h);
  ws3.recv(authenticated(h, ws3.sent[0]!.id, { session_id: "s2" }));
  ws3.recv({ type: "message", channel: "c", seq: 1, from: "bob", data: "new" });
  assert.deepEqual(h.of("message").at(-1).data, "new");
  h.client.close();
});

test("SESSION_NOT_FOUND on resume, or a drop between resume and resumed: authenticate anew once, re-join", async () => {
  for (const how of ["error", "drop"] as const) {
    const h = harness();
    const ws = await goLive(h);
    void h.client.join("room:a");
    ws.recv({ type: "joined", id: ws.last().id, channel: "room:a" });
    ws.drop(1006);
    const ws2 = await nextSocket(h);
    assert.equal(ws2.sent[0]!.type, "resume");
    if (how === "error") {
      ws2.recv({ ...fatal("SESSION_NOT_FOUND", "reauth"), id: ws2.sent[0]!.id });
      ws2.drop(4401);
    } else {
      ws2.drop(1006);
    }
    const ws3 = await nextSocket(h);
    assert.equal(ws3.sent[0]!.type, "auth", how);
    ws3.recv(authenticated(h, ws3.sent[0]!.id, { session_id: "s9" }));
    assert.deepEqual(ws3.ofType("join").map((f) => f.channel), ["room:a"]);
    assert.equal(h.of("session").at(-1).kind, "reauthenticated");
    h.client.close();
    assert.equal(h.clock.pending(), 0);
  }
});

test("logout: sends logout, closes 1000, never reconnects", async () => {
  const h = harness();
  const ws = await goLive(h);
  await h.client.logout();
  assert.equal(ws.ofType("logout").length, 1);
  assert.equal(ws.closedWith?.code, 1000);
  assert.equal(h.client.state, "closed");
  assert.deepEqual(h.of("closed"), [{ code: 1000, reason: "logout" }]);
  ws.drop(1000); // the server's close arrives later: ignored
  assert.equal(h.clock.pending(), 0);
  await assertQuiet(h);
});

test("disconnect() closes 4000 and stays resumable; connect() resumes", async () => {
  const h = harness();
  const ws = await goLive(h);
  h.client.disconnect();
  assert.equal(ws.closedWith?.code, 4000);
  assert.equal(h.client.state, "idle");
  assert.equal(h.clock.pending(), 0, "nothing runs while disconnected");
  await assertQuiet(h, 10_000);
  const connected = h.client.connect();
  await flush();
  const ws2 = h.socket();
  ws2.open();
  assert.equal(ws2.sent[0]!.type, "resume");
  ws2.recv(resumed(ws2.sent[0]!.id));
  await connected;
  assert.equal(h.client.state, "live");
  h.client.close();
});

test("getToken that throws or hangs is a failed attempt, retried after backoff (no tight loop)", async () => {
  const h = harness({ getTokenTimeoutMs: 10_000 }, () => 0.5);
  h.tokenImpl = () => Promise.reject(new Error("idp down"));
  void h.client.connect().catch(() => {});
  await flush();
  assert.equal(h.tokenCalls, 1);
  assert.equal(h.of("error")[0].code, "TOKEN_UNAVAILABLE");
  await flush();
  assert.equal(h.tokenCalls, 1, "not retried at once");
  await h.clock.advance(125); // 0.5 × 250
  assert.equal(h.tokenCalls, 2);
  // Now it hangs: after 10 s, a failure, and the next one after backoff.
  h.tokenImpl = () => new Promise(() => {});
  await h.clock.advance(250); // 0.5 × 500
  assert.equal(h.tokenCalls, 3);
  await h.clock.advance(9_999);
  assert.equal(h.tokenCalls, 3);
  await h.clock.advance(1);
  assert.equal(h.of("error").at(-1).code, "TOKEN_UNAVAILABLE");
  assert.equal(h.tokenCalls, 3, "backoff first");
  h.tokenImpl = (n) => Promise.resolve(`tok${n}`);
  await h.clock.advance(500); // 0.5 × 1000
  assert.equal(h.tokenCalls, 4);
  await flush();
  assert.equal(h.sockets.length, 1);
  assert.equal(h.sockets.length, 1);
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("half-open: ping after heartbeat_ms of silence; pong keeps it; no pong drops it and resumes", async () => {
  const h = harness({ pongTimeoutMs: 10_000 });
  const ws = await goLive(h, { heartbeat_ms: 1000 });
  ws.autoPong = false;
  await h.clock.advance(999);
  assert.equal(ws.ofType("ping").length, 0);
  ws.recv({ type: "message", channel: "c", seq: 1, data: 1 }); // hearing something resets it
  await h.clock.advance(999);
  assert.equal(ws.ofType("ping").length, 0);
  await h.clock.advance(1);
  const ping = ws.ofType("ping");
  assert.equal(ping.length, 1);
  assert.equal(typeof ping[0]!.id, "number");
  ws.recv({ type: "pong", id: ping[0]!.id });
  ws.autoPong = true;
  await h.clock.advance(10_000);
  assert.equal(h.client.state, "live");
  assert.ok(ws.ofType("ping").length >= 10);
  ws.autoPong = false;
  // Now silence: the next ping gets no pong.
  const count = ws.ofType("ping").length;
  await h.clock.advance(1000 + 10_000);
  assert.ok(ws.ofType("ping").length > count - 1);
  assert.ok(ws.terminated || ws.closedWith?.code === 4000, "dropped");
  assert.equal(h.of("error").at(-1).code, "CONNECTION_LOST");
  const ws2 = await nextSocket(h);
  assert.equal(ws2.sent[0]!.type, "resume");
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("rpc: result, APP_ERROR with details, timeout, DISCONNECTED when not live or dropped", async () => {
  const h = harness();
  await assert.rejects(h.client.rpc("m", 1), (e: RpcError) => e instanceof RpcError && e.code === "DISCONNECTED");
  const ws = await goLive(h);
  const ok = h.client.rpc("chat.send", { text: "hi" });
  const call = ws.last();
  assert.deepEqual(call, { type: "rpc", method: "chat.send", data: { text: "hi" }, id: call.id });
  ws.recv({ type: "rpc_result", id: call.id, data: { sent: true } });
  assert.deepEqual(await ok, { sent: true });
  const bad = h.client.rpc("chat.delete", { msg: "m_9" });
  ws.recv({
    type: "error",
    id: ws.last().id,
    code: "APP_ERROR",
    message: "not your message",
    fatal: false,
    details: { owner: "bob" },
  });
  await assert.rejects(bad, (e: RpcError) => e.code === "APP_ERROR" && (e.details as any).owner === "bob");
  const slow = assert.rejects(h.client.rpc("slow", null, { timeoutMs: 5000 }), (e: RpcError) => e.code === "TIMEOUT");
  await h.clock.advance(5000);
  await slow;
  const lost = assert.rejects(h.client.rpc("x", null), (e: RpcError) => e.code === "DISCONNECTED");
  ws.drop(1006);
  await lost;
  const ws2 = await nextSocket(h);
  ws2.recv(resumed(ws2.sent[0]!.id));
  assert.equal(ws2.ofType("rpc").length, 0, "at most once: not resent");
  // join while disconnected is applied on reconnection.
  ws2.drop(1006);
  const joined = h.client.join("room:x");
  const ws3 = await nextSocket(h);
  ws3.recv(resumed(ws3.sent[0]!.id));
  const join = ws3.ofType("join")[0]!;
  assert.equal(join.channel, "room:x");
  ws3.recv({ type: "joined", id: join.id, channel: "room:x" });
  await joined;
  h.client.close();
  assert.equal(h.clock.pending(), 0);
});

test("close() stops every timer in every state", async () => {
  // while waiting for a token, during backoff, authenticating, live with rpc/refresh timers
  const states: ((h: Harness) => Promise<void>)[] = [
    async (h) => {
      h.tokenImpl = () => new Promise(() => {});
      void h.client.connect().catch(() => {});
    },
    async (h) => {
      const ws = await goLive(h);
      ws.drop(1006);
    },
    async (h) => {
      void h.client.connect().catch(() => {});
      await flush();
      h.socket().open();
    },
    async (h) => {
      const ws = await goLive(h, { heartbeat_ms: 1000, expires_at: h.clock.t + 10_000 });
      void h.client.rpc("m", null).catch(() => {});
      await h.clock.advance(1000);
      ws.recv({ type: "expiring", expires_at: h.clock.t + 5000, in_ms: 5000 });
    },
  ];
  for (const enter of states) {
    const h = harness();
    await enter(h);
    assert.ok(h.clock.pending() > 0);
    h.client.close();
    assert.equal(h.clock.pending(), 0);
    assert.equal(h.client.state, "closed");
    await assertQuiet(h);
  }
});

test("the pure machine: offline closes 4000 and waits (no timer); online resumes at once", () => {
  let t = 0;
  const m = new Machine({ now: () => t, random: () => 0.5 });
  const types = (actions: Action[]) => actions.map((a) => a.type);
  let out = m.handle({ type: "connect", handle: 1 });
  assert.deepEqual(types(out), ["emit", "getToken", "setTimer"]);
  const req = (out.find((a) => a.type === "getToken") as { req: number }).req;
  out = m.handle({ type: "tokenResult", req, ok: true, token: "t" });
  const open = out.find((a) => a.type === "open") as { conn: number };
  out = m.handle({ type: "socketOpen", conn: open.conn });
  const auth = out.find((a) => a.type === "send") as unknown as { frame: { id: number } };
  m.handle({
    type: "socketMessage",
    conn: open.conn,
    text: JSON.stringify({ type: "authenticated", id: auth.frame.id, session_id: "s", resume_token: "r", user_id: "u", expires_at: 3_600_000, heartbeat_ms: 25_000 }),
  });
  assert.equal(m.state, "live");
  out = m.handle({ type: "offline" });
  const close = out.find((a) => a.type === "close") as { code: number };
  assert.equal(close.code, 4000);
  assert.equal(m.state, "reconnecting");
  assert.deepEqual(m.activeTimers(), [], "nothing runs while offline");
  out = m.handle({ type: "online" });
  const reopen = out.find((a) => a.type === "open") as { conn: number };
  assert.ok(reopen, "reconnects at once");
  out = m.handle({ type: "socketOpen", conn: reopen.conn });
  const resume = out.find((a) => a.type === "send") as { frame: Record<string, unknown> };
  assert.equal(resume.frame.type, "resume");
  out = m.handle({ type: "close" });
  assert.deepEqual(m.activeTimers(), []);
  assert.ok(out.some((a) => a.type === "close" && a.code === 1000));
});
