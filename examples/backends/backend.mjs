// A wsauth application backend in Node (>= 18), no dependencies.
//
// wsauth (with `app.rpc_url` pointing here) POSTs each of its users' calls with the
// caller's verified identity; this checks that the call came from wsauth and is
// fresh, then answers it. Run: WSAUTH_RPC_SECRET=... node backend.mjs [PORT]
// (PORT 0 picks a free one; the port is printed on the first line).
import { createHmac, timingSafeEqual } from "node:crypto";
import { createServer } from "node:http";

const SECRET = process.env.WSAUTH_RPC_SECRET;
const MAX_SKEW_S = 300;

function fromWsauth(headers, body) {
  const ts = headers["x-wsauth-timestamp"] ?? "";
  const sig = Buffer.from(headers["x-wsauth-signature"] ?? "");
  if (!/^\d+$/.test(ts) || Math.abs(Date.now() / 1000 - Number(ts)) > MAX_SKEW_S) return false;
  const expected = Buffer.from(
    "sha256=" + createHmac("sha256", SECRET).update(`${ts}.`).update(body).digest("hex"),
  );
  return sig.length === expected.length && timingSafeEqual(sig, expected);
}

const methods = {
  "chat.send": (call) => {
    const text = call.data?.text ?? "";
    if (!text) return { error: { message: "text is required", details: { field: "text" } } };
    // The sender is who wsauth says it is: call.sub, never a field of data.
    return { result: { from: call.sub, text, team: call.claims.team ?? null } };
  },
};

const server = createServer(async (req, res) => {
  const chunks = [];
  for await (const chunk of req) chunks.push(chunk);
  const body = Buffer.concat(chunks);
  const answer = (status, payload) => {
    res.writeHead(status, { "Content-Type": "application/json" });
    res.end(JSON.stringify(payload));
  };
  if (!fromWsauth(req.headers, body)) return answer(401, {});
  const call = JSON.parse(body);
  const method = methods[call.method];
  if (!method) return answer(404, {});
  answer(200, method(call));
});

server.listen(Number(process.argv[2] ?? 8000), "127.0.0.1", () => {
  console.log(server.address().port);
});
