"""Checks the chat page in headless Chromium, run by tests/browser.rs.

Usage: chat_check.py --url PAGE_URL --ws WS_URL --cut HOST:PORT --outlast S --screenshot PNG

Opens the page as alice and as bob (two browser contexts, the WebSocket through the
test's proxy at WS_URL), both in #lobby; they talk; then a connection to --cut makes
the proxy drop every connection; once both indicators show live again they talk
more; both pages must then show the whole conversation, in order, once each. The
pages stay open until --outlast seconds after the start (past the first tokens'
lifetime: refreshes are the client's business) and must still be live; then bob moves to #dev, where alice does not see his message until she moves
there too. Saves a screenshot of alice's page.

Uses Debian's Chromium (/usr/bin/chromium), never a browser downloaded by Playwright.
Exits non-zero with a message on a page error, a failed request, an HTTP error, a
console error not about the cut WebSockets, or anything missing on a page.
"""

import argparse
import asyncio
import socket
import sys
import time

from playwright.async_api import async_playwright

CHROMIUM = "/usr/bin/chromium"
ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
VIEWPORT = {"width": 1100, "height": 640}
WAIT_S = 15


def fail(msg):
    print(f"FAIL: {msg}", flush=True)
    sys.exit(1)


def ok(msg):
    print(f"ok: {msg}", flush=True)


async def wait_until(what, check, timeout=WAIT_S):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(0.1)
    fail(f"{what} within {timeout} s (last: {last!r})")


async def conversation(page):
    """[(id, from, text)] of the messages #messages shows, top to bottom."""
    return await page.eval_on_selector_all(
        "#messages li[data-id]",
        """els => els.map(e => [Number(e.dataset.id),
                               e.querySelector('.from').textContent,
                               e.querySelector('.text').textContent])""",
    )


async def status(page):
    return await page.eval_on_selector("#status", "e => [e.dataset.status, Number(e.dataset.lives)]")


async def sign_in(ctx, name, a, problems):
    page = await ctx.new_page()
    page.on("pageerror", lambda e: problems.append(f"{name}: page error: {e}"))
    page.on("console", lambda m: m.type in ("error", "warning")
            and problems.append(f"{name}: console {m.type}: {m.text}"))
    page.on("requestfailed", lambda r: problems.append(f"{name}: request failed: {r.url} {r.failure}"))
    page.on("response", lambda r: r.status >= 400 and problems.append(f"{name}: HTTP {r.status}: {r.url}"))
    response = await page.goto(f"{a.url}?ws={a.ws}")
    if not response or response.status != 200:
        fail(f"GET {a.url} answered {response and response.status}")
    await page.fill("#name", name)
    await page.click("#login button")
    await wait_until(f"{name}'s indicator shows live", lambda: page.is_visible("#status[data-status=live]"))
    await wait_until(f"{name} is in #lobby",
                     lambda: page.is_visible('#rooms button[data-room=lobby][aria-current=true]'))
    me = await page.text_content("#me")
    if me != name:
        fail(f"{name}'s page says it is {me!r}")
    ok(f"{name} signed in, live, in #lobby")
    return page


async def say(page, name, text):
    await wait_until(f"{name} can send", lambda: page.is_enabled("#composer button"))
    await page.fill("#text", text)
    await page.press("#text", "Enter")

    async def shown():
        return any(f == name and t == text for _, f, t in await conversation(page))

    await wait_until(f"{name} sees their own {text!r}", shown)

    # The room's message can arrive before the call's answer, which is what clears
    # the input: wait for the answer too.
    async def cleared():
        return await page.input_value("#text") == ""

    await wait_until(f"{name}'s input cleared once the send is answered", cleared)


async def sees(page, who, expected):
    """Waits until `page` shows exactly `expected` [(from, text)], then checks order and ids."""
    async def complete():
        got = await conversation(page)
        return [(f, t) for _, f, t in got] == expected and got

    async def last():
        return [(f, t) for _, f, t in await conversation(page)]

    deadline = time.monotonic() + WAIT_S
    got = None
    while time.monotonic() < deadline and not got:
        got = await complete()
        if not got:
            await asyncio.sleep(0.1)
    if not got:
        fail(f"{who} shows {await last()} instead of {expected}")
    ids = [i for i, _, _ in got]
    if ids != sorted(set(ids)):
        fail(f"{who}'s messages are out of order or repeated: {ids}")
    return ids


def cut(addr):
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as s:
        answer = s.makefile().readline().strip()
    return int(answer.split()[1])


async def main(a):
    problems = []
    async with async_playwright() as p:
        browser = await p.chromium.launch(executable_path=CHROMIUM, headless=True, args=ARGS)
        started = time.monotonic()
        alice_ctx = await browser.new_context(viewport=VIEWPORT)
        bob_ctx = await browser.new_context(viewport=VIEWPORT)
        alice = await sign_in(alice_ctx, "alice", a, problems)
        bob = await sign_in(bob_ctx, "bob", a, problems)
        if problems:
            fail("; ".join(problems))

        talk = []

        async def line(page, name, text):
            await say(page, name, text)
            talk.append((name, text))
            for who, other in (("alice", alice), ("bob", bob)):
                await sees(other, who, talk)

        await line(alice, "alice", "hello bob")
        await line(bob, "bob", "hi alice <b>not bold</b>")
        ok("alice and bob see each other's messages with the sender's name")
        bold = await alice.eval_on_selector_all("#messages b", "els => els.length")
        if bold:
            fail("a message's text was rendered as HTML")

        lives = {n: (await status(pg))[1] for n, pg in (("alice", alice), ("bob", bob))}
        dropped = cut(a.cut)
        if dropped < 2:
            fail(f"the proxy cut {dropped} connections, not both pages'")
        ok(f"the proxy cut {dropped} connections")
        before_cut = len(problems)
        for n, pg in (("alice", alice), ("bob", bob)):
            async def back(pg=pg, n=n):
                s, count = await status(pg)
                return s == "live" and count > lives[n]
            await wait_until(f"{n}'s indicator goes live again after the cut", back)
        ok("both indicators went live again")
        # Chromium may log the dropped sockets; nothing else may go wrong.
        cut_noise = [m for m in problems[before_cut:] if "WebSocket" in m]
        problems = problems[:before_cut] + [m for m in problems[before_cut:] if "WebSocket" not in m]
        for m in cut_noise:
            print(f"note (the cut): {m}", flush=True)

        await line(bob, "bob", "are you still there?")
        await line(alice, "alice", "yes, back again")
        await line(alice, "alice", "and once more")
        await line(bob, "bob", "good")
        for who, page in (("alice", alice), ("bob", bob)):
            ids = await sees(page, who, talk)
            ok(f"{who} shows all {len(talk)} messages in order, once each (ids {ids})")

        # Past the first tokens' lifetime: the pages stay live on refreshed tokens.
        rest = a.outlast - (time.monotonic() - started)
        if rest > 0:
            await asyncio.sleep(rest)
        for who, page in (("alice", alice), ("bob", bob)):
            s, _ = await status(page)
            if s != "live":
                fail(f"{who}'s page is {s} {a.outlast} s after the start")
        await line(alice, "alice", "after the refresh")
        ok(f"still live and talking {a.outlast} s after the start")

        await bob.click("#rooms button[data-room=dev]")
        await wait_until("bob is in #dev",
                         lambda: bob.is_visible("#rooms button[data-room=dev][aria-current=true]"))
        await wait_until("#dev starts empty", lambda: bob.is_visible("#messages li.note"))
        await say(bob, "bob", "over in dev")
        await asyncio.sleep(0.5)
        await sees(alice, "alice in #lobby", talk)
        await alice.click("#rooms button[data-room=dev]")
        await sees(alice, "alice in #dev", [("bob", "over in dev")])
        await alice.click("#rooms button[data-room=lobby]")
        await sees(alice, "alice back in #lobby (its history)", talk)
        ok("rooms: messages stay in their room; switching loads the history")

        shown = await alice.text_content("#messages li[data-id] .time")
        if not shown or ":" not in shown:
            fail(f"no time shown next to a message: {shown!r}")
        await alice.screenshot(path=a.screenshot)
        print(f"screenshot: {a.screenshot}", flush=True)
        if problems:
            fail("; ".join(problems))
        await browser.close()
    print("chat check: all ok", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--ws", required=True)
    parser.add_argument("--cut", required=True)
    parser.add_argument("--outlast", type=float, required=True)
    parser.add_argument("--screenshot", required=True)
    try:
        asyncio.run(main(parser.parse_args()))
    except SystemExit:
        raise
    except Exception as e:  # noqa: BLE001 - one clear line rather than a traceback
        fail(f"{type(e).__name__}: {e}")
