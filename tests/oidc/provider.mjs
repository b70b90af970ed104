// A real OpenID Connect provider for adapters/server/tests/oidc_provider.rs: the certified
// `oidc-provider` package on loopback, with one client-credentials client whose access
// tokens are RS256 JWTs for the resource `urn:wsauth`.
//
//   node tests/oidc/provider.mjs [port]     (0 or none: an ephemeral port)
//
// Prints one line on stdout once it listens, `{"port":1234}`; the issuer is
// `http://127.0.0.1:<port>` (discovery at /.well-known/openid-configuration, keys at /jwks,
// tokens at /token). Everything else it says goes to stderr.
//
// Key rotation, driven by the test on the same port:
//   POST /__keys  ["k2","k1"]   publish these keys and sign with the first (a kid it has
//                               not seen is a new RSA 2048 key); answers like GET
//   GET  /__keys                {"published":["k2","k1"],"jwks_hits":3} (fetches of /jwks by
//                               wsauth, User-Agent wsauth/…, since the last POST)
// oidc-provider's keystore is fixed when a Provider is built, so a rotation builds a new
// Provider with the new keys and swaps it in as the http.Server's handler: same issuer, same
// port, same (static) client. oidc-provider signs with the first key of its `jwks` that fits
// the algorithm (KeyStore.selectForSign keeps the configured order among equal scores), and
// the test checks the `kid` of every token it gets.

import { generateKeyPairSync } from 'node:crypto';
import { createServer } from 'node:http';

import Provider, { errors } from 'oidc-provider';

// oidc-provider's notices use console.info (stdout): stdout carries only the port line.
console.info = (...args) => console.error(...args);

export const CLIENT_ID = 'wsauth-test';
export const CLIENT_SECRET = 'wsauth-test-secret-of-a-client-credentials-client';
export const RESOURCE = 'urn:wsauth';

const privateKeys = new Map();

/** The private JWK of `kid`, an RSA 2048 key made the first time it is asked for. */
function privateKey(kid) {
  if (!privateKeys.has(kid)) {
    const { privateKey: key } = generateKeyPairSync('rsa', { modulusLength: 2048 });
    privateKeys.set(kid, { ...key.export({ format: 'jwk' }), kid, alg: 'RS256', use: 'sig' });
  }
  return privateKeys.get(kid);
}

function build(issuer, kids) {
  const provider = new Provider(issuer, {
    clients: [
      {
        client_id: CLIENT_ID,
        client_secret: CLIENT_SECRET,
        grant_types: ['client_credentials'],
        redirect_uris: [],
        response_types: [],
        token_endpoint_auth_method: 'client_secret_basic',
      },
    ],
    jwks: { keys: kids.map(privateKey) },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async () => RESOURCE,
        getResourceServerInfo: async (_ctx, resource) => {
          if (resource !== RESOURCE) {
            throw new errors.InvalidTarget();
          }
          return {
            scope: 'chat',
            audience: RESOURCE,
            accessTokenFormat: 'jwt',
            accessTokenTTL: 600,
            jwt: { sign: { alg: 'RS256' } },
          };
        },
      },
    },
    ttl: { ClientCredentials: 600 },
  });
  return provider.callback();
}

const port = Number(process.argv[2] ?? 0);
let published = ['k1'];
let jwksHits = 0;
let handler;

function controlAnswer(res, status, body) {
  res.writeHead(status, { 'content-type': 'application/json', 'cache-control': 'no-store' });
  res.end(JSON.stringify(body));
}

async function control(req, res, issuer) {
  if (req.method === 'GET') {
    controlAnswer(res, 200, { published, jwks_hits: jwksHits });
    return;
  }
  if (req.method !== 'POST') {
    controlAnswer(res, 405, { error: 'GET or POST' });
    return;
  }
  let body = '';
  for await (const chunk of req) body += chunk;
  let kids;
  try {
    kids = JSON.parse(body);
  } catch {
    kids = undefined;
  }
  if (
    !Array.isArray(kids)
    || kids.length === 0
    || !kids.every((k) => typeof k === 'string' && k.length > 0)
    || new Set(kids).size !== kids.length
  ) {
    controlAnswer(res, 400, { error: 'a JSON array of distinct kids, the signing one first' });
    return;
  }
  handler = build(issuer, kids);
  published = kids;
  jwksHits = 0;
  console.error(`provider: publishing ${kids.join(', ')}; signing with ${kids[0]}`);
  controlAnswer(res, 200, { published, jwks_hits: jwksHits });
}

const server = createServer((req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  if (path === '/__keys') {
    control(req, res, server.issuer).catch((e) => controlAnswer(res, 500, { error: String(e) }));
    return;
  }
  if (path === '/jwks' && req.headers['user-agent']?.startsWith('wsauth/')) jwksHits += 1;
  handler(req, res);
});

server.listen(port, '127.0.0.1', () => {
  const { port: chosen } = server.address();
  server.issuer = `http://127.0.0.1:${chosen}`;
  handler = build(server.issuer, published);
  process.stdout.write(`${JSON.stringify({ port: chosen })}\n`);
});

// The test kills this process when it is done; a closed stdin (the test gone) ends it too.
process.stdin.resume();
process.stdin.on('end', () => process.exit(0));
process.on('SIGTERM', () => process.exit(0));
