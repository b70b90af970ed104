"""What the Python client checks share: read one JSON message, check one step."""

import asyncio
import json
import sys


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=5))


def expect(cond, what):
    if not cond:
        print(f"FAIL: {what}")
        sys.exit(1)
    print(f"ok: {what}")
