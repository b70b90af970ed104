"""Checks the operator dashboard in headless Chromium, run by tests/dashboard.rs.

Usage: dashboard_check.py --url DASHBOARD_URL --key ADMIN_KEY --ws WS_URL
                          --bad-token TOKEN --screenshot PNG TOKEN [TOKEN ...]

Loads the dashboard with the key in the fragment, waits for the first figures, then
authenticates one WebSocket connection per TOKEN and fails one with --bad-token, and
waits until the page shows more open connections and a failure code. Saves a
screenshot, then checks that a wrong key brings back the key form, and that typing
the right one there shows the figures.

Uses Debian's Chromium (/usr/bin/chromium), never a browser downloaded by Playwright.
Exits non-zero with a message on any console error or warning, page error, failed
request, or figure that did not change.
"""

import argparse
import asyncio
import json
import sys
import tempfile
import time
import urllib.error
import urllib.request

import websockets
from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
# A 1366×768 laptop screen less the browser's tabs and address bar: the page must fit.
VIEWPORT = {"width": 1366, "height": 657}
WAIT_S = 10


NUM = (int, float)
LATENCY = {k: (int, float, type(None)) for k in ("p50", "p90", "p99", "p999", "max")} | {"count": int}
# The /api/stats schema the page is written against.
SCHEMA = {
    "node": str, "version": str, "uptime_s": int, "time_ms": int,
    "features": {"session_limits": bool, "resume": bool, "query_token": bool, "dashboard": bool},
    "store": {"kind": str, "ready": bool, "errors": int, "latency_ms": LATENCY},
    "connections": {"open": int},
    "sessions": {"live": int},
    "auth": {"ok": int, "refused": int, "refused_by_code": dict},
    "auth_latency_ms": LATENCY,
    "verify_latency_ms": LATENCY,
    "refresh": {"ok": int, "refused": int},
    "resume": {"ok": int, "refused": int, "replayed": int, "gaps": int},
    "revocations": {"issued": int, "closed": int},
    "expired": int, "replaced": int, "evictions": int, "rate_limited": int, "slow_consumer": int,
    "messages": {"in": int, "out": int},
    "rpc": {"ok": int, "app_error": int, "not_found": int, "unavailable": int, "busy": int,
            "latency_ms": LATENCY, "latency_recent_ms": LATENCY},
    "api": {"publish": {"ok": int, "refused": int}, "send": {"ok": int, "refused": int}},
    "closes": [{"close_code": int, "error_code": str, "count": int}],
}


def schema_problems(value, schema, path="stats"):
    """Where `value` differs from `schema` (missing fields, wrong types); extra fields are fine."""
    if isinstance(schema, dict):
        if not isinstance(value, dict):
            return [f"{path} is {type(value).__name__}, not an object"]
        out = []
        for key, sub in schema.items():
            if key not in value:
                out.append(f"{path}.{key} is missing")
            else:
                out += schema_problems(value[key], sub, f"{path}.{key}")
        return out
    if isinstance(schema, list):
        if not isinstance(value, list):
            return [f"{path} is {type(value).__name__}, not a list"]
        return [p for i, item in enumerate(value) for p in schema_problems(item, schema[0], f"{path}[{i}]")]
    types = schema if isinstance(schema, tuple) else (schema,)
    # bool is an int in Python; a flag where a count belongs is still wrong.
    if not isinstance(value, types) or (isinstance(value, bool) and bool not in types):
        return [f"{path} is {value!r}, not {' or '.join(t.__name__ for t in types)}"]
    return []


def get_stats(url, key):
    """(status, JSON or None) of GET /api/stats next to the dashboard URL."""
    stats_url = url.rsplit("/", 1)[0] + "/api/stats"
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(stats_url, headers=headers), timeout=5) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, None


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}", flush=True)


async def figure(page, element_id):
    """The integer shown in #element_id, or None while it shows a placeholder."""
    text = (await page.text_content(f"#{element_id}") or "").strip().replace(",", "")
    return int(text) if text.isdigit() else None


async def wait_until(what, check, timeout=WAIT_S):
    """Polls the async `check` until it returns something other than None, False or
    an empty list (0 counts: no open connections is a figure); fails after `timeout`."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last is not None and last is not False and last != []:
            return last
        await asyncio.sleep(0.2)
    fail(f"{what} within {timeout} s")


async def recv_json(ws):
    return json.loads(await asyncio.wait_for(ws.recv(), timeout=5))


async def authenticate(url, token):
    ws = await websockets.connect(url)
    await ws.send(json.dumps({"type": "auth", "id": 1, "token": token}))
    reply = await recv_json(ws)
    if reply.get("type") != "authenticated":
        fail(f"a good token was not authenticated: {reply}")
    return ws


async def refused(url, token):
    """Authenticates with a bad token; returns the error code the server answered."""
    async with websockets.connect(url) as ws:
        await ws.send(json.dumps({"type": "auth", "id": 1, "token": token}))
        reply = await recv_json(ws)
        if reply.get("type") != "error":
            fail(f"a bad token was not refused: {reply}")
        try:
            await asyncio.wait_for(ws.recv(), timeout=5)
        except websockets.ConnectionClosed:
            pass
        return reply.get("code")


async def main(a):
    problems = []

    def on_console(msg):
        if msg.type in ("error", "warning"):
            problems.append(f"console {msg.type}: {msg.text}")

    async with async_playwright() as p:
        ctx = await p.chromium.launch_persistent_context(
            tempfile.mkdtemp(prefix="wsauth-dash-"),
            executable_path=CHROMIUM, headless=True, args=ARGS, viewport=VIEWPORT,
        )
        page = await ctx.new_page()
        page.on("console", on_console)
        page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
        page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
        page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))

        try:
            response = await page.goto(f"{a.url}#key={a.key}")
        except Exception as e:  # Chromium turns a 404 into a navigation error
            fail(f"GET {a.url} failed: {e}")
        if not response or response.status != 200:
            fail(f"GET {a.url} answered {response and response.status}")
        ok("dashboard loaded")

        before = await wait_until("the first figures appear", lambda: figure(page, "open-connections"))
        before_ok = int((await page.text_content("#auth-ok-total")).split()[0].replace(",", ""))
        ok(f"first figures: {before} open connections, {before_ok} auth ok")
        if "key=" in page.url:
            fail(f"the admin key is still in the address bar: {page.url}")
        if await page.evaluate("sessionStorage.getItem('wsauth.adminKey')") != a.key:
            fail("the admin key is not kept in sessionStorage")
        ok("key moved from the address bar to sessionStorage")
        if problems:
            fail("; ".join(problems))

        conns = [await authenticate(a.ws, t) for t in a.tokens]
        ok(f"{len(conns)} WebSocket connections authenticated")
        code = await refused(a.ws, a.bad_token)
        ok(f"a bad token was refused with {code}")

        async def opened():
            n = await figure(page, "open-connections")
            return n is not None and n >= before + len(conns) and n

        n = await wait_until(f"open connections go from {before} to {before + len(conns)} or more", opened)
        ok(f"open connections now {n}")

        async def codes():
            return await page.eval_on_selector_all("#fail-codes li[data-code]",
                                                   "els => els.map(e => e.dataset.code)")

        shown = await wait_until("a failure code appears under 'Auth failures by code'", codes)
        ok(f"failure codes shown: {', '.join(shown)}")

        async def auth_ok_grew():
            text = await page.text_content("#auth-ok-total")
            return int(text.split()[0].replace(",", "")) >= before_ok + len(conns)

        await wait_until("the auth ok total grows", auth_ok_grew)
        ok("auth ok total grew")

        # One call per connection to a method the server has no handler for.
        for i, ws in enumerate(conns):
            await ws.send(json.dumps({"type": "rpc", "id": 10 + i, "method": "dash.nothing"}))
            reply = await recv_json(ws)
            if reply.get("code") != "METHOD_NOT_FOUND":
                fail(f"an rpc without a handler got {reply}")

        async def calls_counted():
            total = await page.evaluate("""() => {
                const row = [...document.querySelectorAll('#rpc tr')]
                    .find((r) => r.cells[0] && r.cells[0].textContent === 'Not found');
                return row ? row.cells[1].textContent : null; }""")
            return total is not None and total != "—" and int(total.replace(",", "")) >= len(conns)

        await wait_until("'Application calls' counts the calls not found", calls_counted)
        ok("application calls panel counts the calls")
        # Let a few more polls in so rates and the chart have something to show.
        await asyncio.sleep(2)

        status, stats = get_stats(a.url, a.key)
        if status != 200:
            fail(f"GET /api/stats with the key answered {status}")
        print(f"stats: {json.dumps(stats, separators=(',', ':'))}", flush=True)
        problems += [f"/api/stats: {p}" for p in schema_problems(stats, SCHEMA)]
        if not problems:
            ok("/api/stats matches the schema")
        status, _ = get_stats(a.url, None)
        if status != 401:
            problems.append(f"GET /api/stats without the key answered {status}, not 401")

        size = await page.evaluate("""() => ({
            w: document.documentElement.scrollWidth, h: document.documentElement.scrollHeight,
            vw: innerWidth, vh: innerHeight })""")
        if size["w"] > size["vw"] or size["h"] > size["vh"]:
            fail(f"the page scrolls at {VIEWPORT['width']}×{VIEWPORT['height']}: {size}")
        ok(f"fits {VIEWPORT['width']}×{VIEWPORT['height']} without scrolling")

        await page.screenshot(path=a.screenshot)
        print(f"screenshot: {a.screenshot}", flush=True)

        for ws in conns:
            await ws.close()
        if problems:
            fail("; ".join(problems))

        # A wrong key: the page asks for the key again. The 401 it logs is expected
        # there, so this page's console is not recorded.
        wrong = await ctx.new_page()
        wrong_errors = []
        wrong.on("pageerror", lambda e: wrong_errors.append(str(e)))
        await wrong.goto(f"{a.url}#key=not-the-admin-key")
        await wait_until("the key form comes back after a 401", lambda: wrong.is_visible("#keyform"))
        banner = await wrong.text_content("#banner") or ""
        if "401" not in banner:
            fail(f"the banner does not say why the key is asked for: {banner!r}")
        if wrong_errors:
            fail("; ".join(wrong_errors))
        ok("a wrong key brings back the key form")
        await wrong.fill("#keyinput", a.key)
        await wrong.click("#keyform button")
        await wait_until("the figures appear after typing the key", lambda: figure(wrong, "open-connections"))
        if await wrong.is_visible("#banner"):
            fail(f"the error banner stays after a good key: {await wrong.text_content('#banner')!r}")
        ok("typing the right key into the form shows the figures")

        await ctx.close()
    print("dashboard check: all ok", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--ws", required=True)
    parser.add_argument("--bad-token", required=True)
    parser.add_argument("--screenshot", required=True)
    parser.add_argument("tokens", nargs="+")
    try:
        asyncio.run(main(parser.parse_args()))
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - one clear line rather than a traceback
        fail(f"{type(e).__name__}: {e}")
