"""Application calls (`rpc`, PROTOCOL §8) from Python (`websockets`), run by
tests/python_client.rs against a server whose handlers the test registers.

Usage: python_rpc.py WS_URL TOKEN
Calls `whoami` (the handler answers with the caller's identity), sends two calls
whose results come back in the other order, and checks METHOD_NOT_FOUND and
APP_ERROR. Prints one line per step and exits non-zero on the first surprise.
"""

import asyncio
import json
import sys

import websockets

from checks import expect, recv_json


async def main(url, token):
    async with websockets.connect(url, subprotocols=["wsauth.v1"]) as ws:
        await ws.send(json.dumps({"type": "auth", "id": 1, "token": token}))
        auth = await recv_json(ws)
        expect(auth["type"] == "authenticated", "authenticated")

        await ws.send(json.dumps({"type": "rpc", "id": 2, "method": "whoami", "data": {"text": "hi"}}))
        result = await recv_json(ws)
        expect(result["type"] == "rpc_result" and result["id"] == 2, "rpc_result for id 2")
        expect(result["data"]["sub"] == auth["user_id"], "the handler saw the caller's sub")
        expect(result["data"]["session_id"] == auth["session_id"], "and its session")
        expect(result["data"]["data"] == {"text": "hi"}, "and the call's data")

        # The slow call is sent first; the fast one's result overtakes it.
        await ws.send(json.dumps({"type": "rpc", "id": 3, "method": "slow.wait", "data": 300}))
        await ws.send(json.dumps({"type": "rpc", "id": 4, "method": "slow.now", "data": 0}))
        first, second = await recv_json(ws), await recv_json(ws)
        expect([first["id"], second["id"]] == [4, 3], "results matched by id, fast first")

        await ws.send(json.dumps({"type": "rpc", "id": 5, "method": "no.such.method"}))
        err = await recv_json(ws)
        expect(err["code"] == "METHOD_NOT_FOUND" and err["id"] == 5 and not err["fatal"], "METHOD_NOT_FOUND")

        await ws.send(json.dumps({"type": "rpc", "id": 6, "method": "refuse"}))
        err = await recv_json(ws)
        expect(err["code"] == "APP_ERROR" and err["details"] == {"capacity": 2}, "APP_ERROR with details")
    print("python rpc: all ok")


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1], sys.argv[2]))
