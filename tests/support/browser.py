"""Playwright helpers for the portal's browser tests: Debian's Chromium, headless, nothing phoned home.

    with chromium() as browser:
        page = sign_in(browser, base_url, "billing@northwind.example", password)
        page.goto("/mapping/customers")
        submit(page.locator("button:has-text('Accept suggestion')").first)
        assert "mapped" in flash(page)
        screenshot(page, "customers")   # /tmp/portal-customers.png

Why a second process: the test session runs under eventlet's monkey-patching (tests/conftest.py,
as the services do), and Playwright's sync API (greenlets over asyncio) hangs on the patched
selectors. So Playwright runs in a child process of its own (`python -m tests.support.browser`,
never patched) and the test drives it through thin proxies: `page.locator(".x").first.inner_text()`
reads exactly like Playwright, each call is one JSON line over a pipe. Arguments and results are
JSON (a Locator or Page comes back as a proxy; bytes as None); callbacks and context managers live
in the child, behind the helpers below (sign_in, submit, post_form, script errors).
"""
import contextlib
import json
import os
import pathlib
import subprocess
import sys

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
        "--disable-sync", "--no-first-run"]
SHOTS = pathlib.Path("/tmp")
VIEWPORT = {"width": 1440, "height": 900}
ROOT = pathlib.Path(__file__).resolve().parents[2]
TIMEOUT_MS = 15_000


class BrowserError(AssertionError):
    """Playwright raised in the browser process (a timeout, a missing element...)."""


# --- the test's side ---------------------------------------------------------------------------
class Remote:
    def __init__(self):
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.support.browser"], cwd=ROOT,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE)
        self.ask({"op": "ping"})

    def ask(self, message):
        self.proc.stdin.write(json.dumps(message).encode() + b"\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise BrowserError(f"the browser process ended (exit code {self.proc.poll()})")
        reply = json.loads(line)
        if "error" in reply:
            raise BrowserError(reply["error"])
        if "handle" in reply:
            return Proxy(self, reply["handle"])
        return reply.get("value")

    def close(self):
        try:
            self.ask({"op": "quit"})
        except (BrowserError, OSError, ValueError):
            pass
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


class Proxy:
    """A Playwright object in the browser process: attribute steps are recorded, a call runs them."""

    def __init__(self, remote, root, chain=()):
        object.__setattr__(self, "_remote", remote)
        object.__setattr__(self, "_root", root)
        object.__setattr__(self, "_chain", tuple(chain))

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        return Proxy(self._remote, self._root, self._chain + ({"attr": name},))

    def __call__(self, *args, **kwargs):
        if not self._chain or "attr" not in self._chain[-1]:
            raise TypeError("not callable")
        step = {"call": self._chain[-1]["attr"], "args": _encode(list(args)), "kwargs": _encode(kwargs)}
        return self._remote.ask({"op": "eval", "root": self._root, "chain": list(self._chain[:-1]) + [step]})

    def _ref(self):
        return {"root": self._root, "chain": list(self._chain)}


def value(proxy):
    """Read a property (e.g. value(page.url)): attribute steps alone are not sent until asked."""
    return proxy._remote.ask({"op": "eval", **proxy._ref()})


def _encode(data):
    if isinstance(data, Proxy):
        return {"__proxy__": data._ref()}
    if isinstance(data, dict):
        return {k: _encode(v) for k, v in data.items()}
    if isinstance(data, (list, tuple)):
        return [_encode(v) for v in data]
    return data


@contextlib.contextmanager
def chromium():
    remote = Remote()
    try:
        yield Proxy(remote, 0)
    finally:
        remote.close()


def sign_in(browser, base_url, email, password):
    """A fresh browser context (its own cookies) signed in through the login form; returns its page.

    Every confirm() dialog is accepted; JavaScript errors and console errors (a CSP refusal is
    one) are kept for assert_no_script_errors."""
    return browser._remote.ask({"op": "sign_in", "base_url": base_url, "email": email, "password": password})


def submit(locator):
    """Click a form's button and wait for the page the redirect-after-post leads to."""
    locator._remote.ask({"op": "submit", **locator._ref()})


def post_form(page, path, form):
    """POST a form from the page's session (its cookies) -> (status, body text)."""
    reply = page._remote.ask({"op": "post_form", **page._ref(), "path": path, "form": form})
    return reply["status"], reply["text"]


def assert_no_script_errors(page):
    errors = page._remote.ask({"op": "errors", **page._ref()})
    assert not errors, errors


def screenshot(page, name):
    path = SHOTS / f"portal-{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path


def flash(page):
    """The flash message shown after a form was sent (text), or None."""
    box = page.locator(".flash")
    return box.inner_text() if box.count() else None


# --- the browser process -----------------------------------------------------------------------
class _Server:
    def __init__(self, browser):
        self.objects = {0: browser}
        self.errors = {}  # id(page) -> messages

    def resolve(self, ref):
        target = self.objects[ref["root"]]
        for step in ref["chain"]:
            if "attr" in step:
                target = getattr(target, step["attr"])
            else:
                target = getattr(target, step["call"])(*self.decode(step["args"]), **self.decode(step["kwargs"]))
        return target

    def decode(self, data):
        if isinstance(data, dict):
            if "__proxy__" in data:
                return self.resolve(data["__proxy__"])
            return {k: self.decode(v) for k, v in data.items()}
        if isinstance(data, list):
            return [self.decode(v) for v in data]
        return data

    def reply(self, result):
        if isinstance(result, (bytes, bytearray)):
            return {"value": None}
        try:
            json.dumps(result)
            return {"value": result}
        except TypeError:
            handle = len(self.objects)
            self.objects[handle] = result
            return {"handle": handle}

    def handle(self, message):
        op = message["op"]
        if op == "ping":
            return {"value": "pong"}
        if op == "eval":
            return self.reply(self.resolve(message))
        if op == "sign_in":
            return self.reply(self.sign_in(message))
        if op == "submit":
            locator = self.resolve(message)
            with locator.page.expect_navigation():
                locator.click()
            return {"value": None}
        if op == "post_form":
            page = self.resolve(message)
            response = page.request.post(message["path"], form=message["form"], max_redirects=0)
            return {"value": {"status": response.status, "text": response.text()}}
        if op == "errors":
            page = self.resolve(message)
            return {"value": [e for e in self.errors.get(id(page), []) if "favicon.ico" not in e]}
        raise ValueError(f"unknown op {op!r}")

    def sign_in(self, message):
        import re

        context = self.objects[0].new_context(viewport=VIEWPORT, base_url=message["base_url"])
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        errors = self.errors.setdefault(id(page), [])
        page.on("pageerror", lambda exc: errors.append(f"page error: {exc}"))
        page.on("console", lambda msg: errors.append(f"console: {msg.text} {msg.location.get('url', '')}")
                if msg.type == "error" else None)
        page.on("dialog", lambda dialog: dialog.accept())
        page.goto("/login")
        page.fill("#email", message["email"])
        page.fill("#password", message["password"])
        with page.expect_navigation():
            page.click("button[type=submit]")
        if not re.search(r"/$", page.url):
            raise ValueError(f"sign-in as {message['email']} did not reach the home page ({page.url})")
        return page


def _serve():
    from playwright.sync_api import sync_playwright

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes to stderr, never into the protocol
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS, headless=True)
        server = _Server(browser)
        for line in sys.stdin.buffer:
            message = json.loads(line)
            if message["op"] == "quit":
                out.write(b'{"value": null}\n')
                out.flush()
                break
            try:
                reply = server.handle(message)
            except Exception as exc:  # noqa: BLE001 - every failure goes back to the test as its message
                reply = {"error": f"{type(exc).__name__}: {exc}"}
            out.write(json.dumps(reply).encode() + b"\n")
            out.flush()
        browser.close()


if __name__ == "__main__":
    _serve()
