"""A wsauth application backend in Python, standard library only.

wsauth (with `app.rpc_url` pointing here) POSTs each of its users' calls with the
caller's verified identity; this checks that the call came from wsauth and is
fresh, then answers it. Run: WSAUTH_RPC_SECRET=... python3 backend.py [PORT]
(PORT 0 picks a free one; the port is printed on the first line).
"""

import hashlib
import hmac
import json
import os
import sys
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

SECRET = os.environ["WSAUTH_RPC_SECRET"].encode()
MAX_SKEW_S = 300


def from_wsauth(headers, body):
    """True when the signature is wsauth's and the timestamp is recent."""
    ts = headers.get("X-Wsauth-Timestamp", "")
    sig = headers.get("X-Wsauth-Signature", "")
    if not ts.isdigit() or abs(time.time() - int(ts)) > MAX_SKEW_S:
        return False
    expected = hmac.new(SECRET, ts.encode() + b"." + body, hashlib.sha256).hexdigest()
    return hmac.compare_digest(sig, "sha256=" + expected)


def chat_send(call):
    text = (call["data"] or {}).get("text", "")
    if not text:
        return {"error": {"message": "text is required", "details": {"field": "text"}}}
    # The sender is who wsauth says it is: call["sub"], never a field of data.
    return {"result": {"from": call["sub"], "text": text, "team": call["claims"].get("team")}}


METHODS = {"chat.send": chat_send}


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if not from_wsauth(self.headers, body):
            return self.answer(401, {})
        call = json.loads(body)
        method = METHODS.get(call["method"])
        if method is None:
            return self.answer(404, {})
        self.answer(200, method(call))

    def answer(self, status, payload):
        out = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(out)))
        self.end_headers()
        self.wfile.write(out)

    def log_message(self, *args):
        pass


if __name__ == "__main__":
    server = ThreadingHTTPServer(("127.0.0.1", int(sys.argv[1]) if len(sys.argv) > 1 else 8000), Handler)
    print(server.server_address[1], flush=True)
    server.serve_forever()
