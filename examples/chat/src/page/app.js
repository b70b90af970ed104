// The chat page: a name from the development login, three rooms, the messages of
// the current one, and the connection's state. The WebSocket session (auth,
// refresh, resume) is the client's business: the page only follows its `state`
// and `session` events.

const ROOMS = ["lobby", "dev", "random"];
const $ = (id) => document.getElementById(id);

const params = new URLSearchParams(location.search);
const wsUrl =
  params.get("ws") || `${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/ws`;

let client = null;
let me = null;
let room = null;
let ready = false;
let everLive = false;
let lives = 0;
let signingOut = false;
// room -> Map(id -> message)
const rooms = new Map(ROOMS.map((r) => [r, new Map()]));

const channelOf = (r) => `room:${r}`;
const roomOf = (channel) => (channel.startsWith("room:") ? channel.slice(5) : null);

function banner(text) {
  $("banner").textContent = text || "";
  $("banner").hidden = !text;
}

function problem(el, text) {
  $(el).textContent = text || "";
  $(el).hidden = !text;
}

function describe(err) {
  if (err && err.code) {
    const field = err.details && err.details.field ? ` (${err.details.field})` : "";
    return `${err.message || err.code}${field}`;
  }
  return (err && err.message) || String(err);
}

// ---- the client, loaded at run time so that a missing build says so ----------

let WsAuthClient = null;
try {
  ({ WsAuthClient } = await import("/client/index.js"));
} catch (err) {
  banner(
    "The browser client is not available (/client/index.js): run `npm ci` in clients/js, then reload. " +
      describe(err),
  );
  $("login").querySelector("button").disabled = true;
}

// ---- the connection indicator --------------------------------------------------

function showState(state) {
  let shown;
  if (state === "live") shown = "live";
  else if (state === "idle" || state === "closed") shown = "offline";
  else shown = everLive ? "reconnecting" : "connecting";
  const status = $("status");
  if (shown === "live" && status.dataset.status !== "live") {
    lives += 1;
    status.dataset.lives = String(lives);
  }
  if (shown === "live") everLive = true;
  status.dataset.status = shown;
  status.dataset.state = state;
  status.textContent = shown;
  status.title = `client state: ${state}`;
  $("composer").querySelector("button").disabled = shown !== "live";
}

// ---- messages ------------------------------------------------------------------

function timeOf(at) {
  return new Date(at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit" });
}

function item(m) {
  const li = document.createElement("li");
  li.dataset.id = String(m.id);
  li.dataset.from = m.from;
  if (m.from === me) li.className = "mine";
  const from = document.createElement("span");
  from.className = "from";
  from.textContent = m.from;
  const time = document.createElement("time");
  time.className = "time";
  time.dateTime = new Date(m.at).toISOString();
  time.title = new Date(m.at).toLocaleString();
  time.textContent = timeOf(m.at);
  const text = document.createElement("span");
  text.className = "text";
  text.textContent = m.text;
  li.append(from, time, text);
  return li;
}

function atBottom(list) {
  return list.scrollHeight - list.scrollTop - list.clientHeight < 40;
}

function renderMessages() {
  const list = $("messages");
  const kept = [...(rooms.get(room) || new Map()).values()].sort((a, b) => a.id - b.id);
  list.replaceChildren(...kept.map(item));
  if (!kept.length) {
    const li = document.createElement("li");
    li.className = "note";
    li.textContent = `No messages in #${room} yet.`;
    list.append(li);
  }
  list.scrollTop = list.scrollHeight;
}

function valid(m) {
  return (
    m && Number.isSafeInteger(m.id) && typeof m.from === "string" &&
    typeof m.text === "string" && Number.isFinite(m.at)
  );
}

// Adds a message once, whatever way it came (published, answered, history).
function add(r, m) {
  const kept = rooms.get(r);
  if (!kept || !valid(m) || kept.has(m.id)) return;
  kept.set(m.id, { id: m.id, from: m.from, text: m.text, at: m.at });
  if (r !== room) return;
  const list = $("messages");
  const follow = atBottom(list);
  list.querySelector("li.note")?.remove();
  const li = item(m);
  let after = list.lastElementChild;
  while (after && Number(after.dataset.id) > m.id) after = after.previousElementSibling;
  if (after) after.after(li);
  else list.prepend(li);
  if (follow || m.from === me) list.scrollTop = list.scrollHeight;
}

async function loadHistory(r) {
  const answer = await client.rpc("chat.history", { room: r }, { timeoutMs: 5000 });
  for (const m of answer.messages || []) add(r, m);
}

// ---- rooms ---------------------------------------------------------------------

function renderRooms() {
  $("rooms").replaceChildren(
    ...ROOMS.map((r) => {
      const b = document.createElement("button");
      b.type = "button";
      b.textContent = r;
      b.dataset.room = r;
      b.setAttribute("aria-current", String(r === room));
      b.addEventListener("click", () => enter(r));
      return b;
    }),
  );
  $("text").placeholder = `Message #${room}`;
}

// Joins the new room before leaving the old one, then loads its history: a
// message sent meanwhile arrives as a message, or in the history, or both
// (kept once).
async function enter(next) {
  if (next === room) return;
  const previous = room;
  room = next;
  rooms.set(next, new Map());
  renderRooms();
  renderMessages();
  try {
    await client.join(channelOf(next));
    if (previous) await client.leave(channelOf(previous)).catch(() => {});
    if (room === next) await loadHistory(next);
    banner("");
  } catch (err) {
    banner(`Could not open #${next}: ${describe(err)}`);
  }
}

// After a new session (the old one could not be resumed) the room must be
// joined again; after any reconnection, messages missed meanwhile are fetched.
async function resync(kind) {
  const r = room;
  try {
    if (kind !== "resumed") await client.join(channelOf(r));
    await loadHistory(r);
  } catch (err) {
    banner(`Could not reload #${r}: ${describe(err)}`);
  }
}

// ---- signing in and out --------------------------------------------------------

async function login(name) {
  const answer = await fetch("/login", {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ name }),
  });
  const body = await answer.json().catch(() => ({}));
  if (!answer.ok || typeof body.token !== "string") {
    throw new Error(body.error || `login failed: HTTP ${answer.status}`);
  }
  return body.token;
}

async function start(name) {
  let first = await login(name);
  me = name;
  ready = false;
  signingOut = false;
  client = new WsAuthClient({
    url: wsUrl,
    // The first token is the one just obtained; refreshes get new ones.
    getToken: async () => {
      if (first) {
        const token = first;
        first = null;
        return token;
      }
      return login(name);
    },
  });
  client.on("state", (s) => {
    showState(s);
    if (s === "live") banner("");
  });
  client.on("message", (m) => {
    const r = roomOf(m.channel || "");
    if (r && m.data && m.data.kind === "chat") add(r, m.data);
  });
  client.on("session", (s) => {
    if (ready) resync(s.kind);
  });
  client.on("closed", (c) => {
    if (signingOut) return;
    if (c.retry === "none" || c.retry === "reauth" || c.code === 1000) {
      banner(`Disconnected: ${c.reason || "the session ended"} (${c.code}).`);
    }
  });
  $("login").hidden = true;
  $("chat").hidden = false;
  $("signout").hidden = false;
  $("me").textContent = name;
  $("me").hidden = false;
  await client.connect();
  room = null;
  await enter("lobby");
  ready = true;
  $("text").focus();
}

$("login").addEventListener("submit", async (e) => {
  e.preventDefault();
  const name = $("name").value.trim();
  problem("login-error", "");
  if (!/^[A-Za-z0-9_-]{1,32}$/.test(name)) {
    problem("login-error", "A name is 1–32 letters, digits, _ or -.");
    return;
  }
  const button = $("login").querySelector("button");
  button.disabled = true;
  try {
    await start(name);
  } catch (err) {
    problem("login-error", describe(err));
    signOut(false);
  } finally {
    button.disabled = false;
  }
});

async function signOut(logout = true) {
  signingOut = true;
  ready = false;
  const c = client;
  client = null;
  if (c) {
    if (logout) await c.logout().catch(() => {});
    c.close();
  }
  me = null;
  room = null;
  everLive = false;
  for (const kept of rooms.values()) kept.clear();
  $("chat").hidden = true;
  $("login").hidden = false;
  $("signout").hidden = true;
  $("me").hidden = true;
  showState("idle");
}

$("signout").addEventListener("click", () => signOut());

// ---- sending -------------------------------------------------------------------

$("composer").addEventListener("submit", async (e) => {
  e.preventDefault();
  const input = $("text");
  const text = input.value.trim();
  if (!text || !client) return;
  const r = room;
  const button = $("composer").querySelector("button");
  button.disabled = true;
  try {
    const answer = await client.rpc("chat.send", { room: r, text }, { timeoutMs: 5000 });
    add(r, { id: answer.id, at: answer.at, from: me, text });
    input.value = "";
    problem("send-error", "");
  } catch (err) {
    problem("send-error", `Not sent: ${describe(err)}`);
  } finally {
    button.disabled = $("status").dataset.status !== "live";
    input.focus();
  }
});

showState("idle");
