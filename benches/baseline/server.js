'use strict';
// A baseline WebSocket auth server of the kind many teams write by hand: `ws` plus
// `jsonwebtoken`, first-message authentication, sessions in a Map. It implements only what
// `wsauth-load connect --auth message` needs:
//
//   -> {"type":"auth","id":1,"token":"<HS256 JWT>"}
//   <- {"type":"authenticated","id":1,"session_id":…,"resume_token":…,"user_id":…,"expires_at":…}
//   failure: {"type":"error","id":1,"code":…,"message":…,"fatal":true} then close 4401
//
// Environment: PORT (default 8081), HOST (default 127.0.0.1), WSAUTH_JWT__HS256_SECRET.

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');
const jwt = require('jsonwebtoken');

const PORT = Number(process.env.PORT || 8081);
const HOST = process.env.HOST || '127.0.0.1';
const SECRET = process.env.WSAUTH_JWT__HS256_SECRET;
const AUTH_TIMEOUT_MS = 5000;

if (!SECRET || Buffer.byteLength(SECRET) < 32) {
  console.error('WSAUTH_JWT__HS256_SECRET must be set to at least 32 bytes');
  process.exit(2);
}

// session_id -> { userId, resumeTokenHash, expiresAt }
const sessions = new Map();

const server = http.createServer((req, res) => {
  res.writeHead(404, { 'content-type': 'application/json' });
  res.end('{"code":"NOT_FOUND"}');
});
const wss = new WebSocketServer({ server, path: '/ws', maxPayload: 64 * 1024 });

function fail(ws, id, code, message, closeCode) {
  const err = { type: 'error', code, message, fatal: true };
  if (id !== undefined) err.id = id;
  ws.send(JSON.stringify(err));
  ws.close(closeCode, code);
}

function tokenErrorCode(e) {
  if (e.name === 'TokenExpiredError') return 'TOKEN_EXPIRED';
  if (e.name === 'NotBeforeError') return 'TOKEN_NOT_YET_VALID';
  return 'AUTH_FAILED';
}

wss.on('connection', (ws) => {
  let sessionId = null;
  const timer = setTimeout(() => {
    if (!sessionId) fail(ws, undefined, 'AUTH_TIMEOUT', 'authentication timed out', 4408);
  }, AUTH_TIMEOUT_MS);

  ws.on('message', (data, isBinary) => {
    let msg;
    try {
      msg = isBinary ? null : JSON.parse(data.toString());
    } catch (_) {
      msg = null;
    }
    if (!msg || typeof msg !== 'object' || typeof msg.type !== 'string') {
      return fail(ws, undefined, 'BAD_REQUEST', 'not a JSON object with a type', 4400);
    }
    const id = Number.isInteger(msg.id) ? msg.id : undefined;
    if (sessionId) {
      if (msg.type === 'auth') {
        const err = { type: 'error', code: 'ALREADY_AUTHENTICATED', message: 'already authenticated', fatal: false };
        if (id !== undefined) err.id = id;
        return ws.send(JSON.stringify(err));
      }
      return fail(ws, id, 'BAD_REQUEST', 'unsupported request', 4400);
    }
    if (msg.type !== 'auth') {
      return fail(ws, id, 'NOT_AUTHENTICATED', 'authenticate first', 4401);
    }
    if (typeof msg.token !== 'string' || msg.token.length > 8192) {
      return fail(ws, id, 'INVALID_TOKEN', 'invalid token', 4401);
    }
    let claims;
    try {
      claims = jwt.verify(msg.token, SECRET, { algorithms: ['HS256'], clockTolerance: 30 });
    } catch (e) {
      return fail(ws, id, tokenErrorCode(e), 'authentication failed', 4401);
    }
    if (typeof claims.sub !== 'string' || claims.sub === '' || typeof claims.exp !== 'number') {
      return fail(ws, id, 'INVALID_TOKEN', 'invalid token', 4401);
    }
    clearTimeout(timer);
    sessionId = 's_' + crypto.randomBytes(16).toString('base64url');
    const resumeToken = 'r_' + crypto.randomBytes(32).toString('base64url');
    const expiresAt = claims.exp * 1000;
    sessions.set(sessionId, {
      userId: claims.sub,
      resumeTokenHash: crypto.createHash('sha256').update(resumeToken).digest('base64url'),
      expiresAt,
    });
    const reply = {
      type: 'authenticated',
      session_id: sessionId,
      resume_token: resumeToken,
      user_id: claims.sub,
      expires_at: expiresAt,
    };
    if (id !== undefined) reply.id = id;
    ws.send(JSON.stringify(reply));
  });

  ws.on('close', () => {
    clearTimeout(timer);
    if (sessionId) sessions.delete(sessionId);
  });
  ws.on('error', () => {});
});

server.listen(PORT, HOST, () => {
  console.log(`baseline listening on ws://${HOST}:${PORT}/ws`);
});

function shutdown() {
  for (const ws of wss.clients) ws.terminate();
  server.close(() => process.exit(0));
  setTimeout(() => process.exit(0), 1000).unref();
}
process.on('SIGINT', shutdown);
process.on('SIGTERM', shutdown);
