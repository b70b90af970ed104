"""A wsauth client in Python (`websockets`), run by tests/python_client.rs.

Usage: python_client.py WS_URL TOKEN BAD_TOKEN
Authenticates by message, joins a channel, publishes and receives its own message,
resumes after dropping the connection, then checks that a bad token is closed 4401.
Prints one line per step and exits non-zero on the first surprise.
"""

import asyncio
import json
import sys

import websockets

from checks import expect, recv_json


async def main(url, token, bad_token):
    async with websockets.connect(url, subprotocols=["wsauth.v1"]) as ws:
        expect(ws.subprotocol == "wsauth.v1", "subprotocol wsauth.v1 selected")
        await ws.send(json.dumps({"type": "auth", "id": 1, "token": token}))
        auth = await recv_json(ws)
        expect(auth["type"] == "authenticated" and auth["id"] == 1, "authenticated")
        await ws.send(json.dumps({"type": "join", "id": 2, "channel": "general"}))
        expect((await recv_json(ws)) == {"type": "joined", "id": 2, "channel": "general"}, "joined general")
        await ws.send(json.dumps({"type": "publish", "id": 3, "channel": "general", "data": {"from": "python"}}))
        expect((await recv_json(ws)) == {"type": "published", "id": 3}, "published")
        msg = await recv_json(ws)
        expect(msg["type"] == "message" and msg["seq"] == 1 and msg["data"] == {"from": "python"}, "own message, seq 1")
        session_id, resume_token = auth["session_id"], auth["resume_token"]
        # Drop without a close frame.
        ws.transport.abort()

    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "resume", "id": 1, "session_id": session_id,
                                  "resume_token": resume_token, "last_seq": 1}))
        resumed = await recv_json(ws)
        expect(resumed["type"] == "resumed" and resumed["channels"] == ["general"], "resumed with its channel")
        expect(resumed["resume_token"] != resume_token, "resume token rotated")

    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "id": 1, "token": bad_token}))
        err = await recv_json(ws)
        expect(err["type"] == "error" and err["code"] == "AUTH_FAILED" and err["fatal"], "AUTH_FAILED")
        try:
            await asyncio.wait_for(ws.recv(), timeout=5)
        except websockets.ConnectionClosed as closed:
            code = closed.rcvd.code if closed.rcvd else None
            expect(code == 4401, f"closed 4401 (got {code})")
        else:
            expect(False, "the server closes after a fatal error")
    print("python client: all ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2], sys.argv[3]))
