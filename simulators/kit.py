"""Shared plumbing for the vendor simulators (test doubles of outside APIs).

Every simulator is a Flask app built by make_app(). The kit adds:
- admin routes under /_sim (health, fault rules, write log, request counts);
- fault injection on every vendor (non-/_sim) request, deterministic under a seed;
- serve() / main() to run an app on a threaded werkzeug server;
- SlidingWindowLimit and ConcurrencyGate for vendor rate limits.

Simulators share no code with the product: they are written from the vendor docs.
"""
from __future__ import annotations

import argparse
import collections
import datetime as _dt
import itertools
import json
import random
import re
import signal
import socket
import sys
import threading
import time
from typing import Any, Callable

import flask
from werkzeug.exceptions import HTTPException
from werkzeug.serving import BaseWSGIServer, WSGIRequestHandler, make_server

FAULT_KINDS = ("status", "latency", "timeout", "drop_after_write")
ADMIN_PREFIX = "/_sim"


def utcnow_iso() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def _default_error_body(status: int, message: str) -> tuple[dict, dict]:
    return {"status": status, "error": message}, {}


class SimKit:
    """Per-app simulator state that is not vendor data: faults, write log, counts."""

    def __init__(self, name: str, seed: int = 0):
        self.name = name
        self.seed = seed
        self.lock = threading.RLock()  # handlers that mutate vendor state take it too
        self.rng = random.Random(seed)
        self.faults: list[dict] = []
        self.writes: list[dict] = []
        self.counts: collections.Counter = collections.Counter()
        self.route_counts: collections.Counter = collections.Counter()
        self.total = 0
        self.error_body: Callable[[int, str], tuple[Any, dict]] = _default_error_body
        self._fault_ids = itertools.count(1)
        self._write_seq = itertools.count(1)

    # --- faults -------------------------------------------------------------
    def add_fault(self, spec: dict) -> dict:
        kind = spec.get("kind")
        if kind not in FAULT_KINDS:
            raise ValueError(f"kind must be one of {FAULT_KINDS}")
        pattern = spec.get("endpoint", ".*")
        try:
            regex = re.compile(pattern)
        except re.error as exc:
            raise ValueError(f"bad endpoint regex: {exc}") from exc
        rate = float(spec.get("rate", 1))
        if not 0 <= rate <= 1:
            raise ValueError("rate must be within 0..1")
        count = spec.get("count")
        rule = {
            "id": next(self._fault_ids),
            "endpoint": pattern,
            "kind": kind,
            "rate": rate,
            "status": int(spec.get("status", 500)),
            "seconds": float(spec["seconds"]) if spec.get("seconds") is not None else None,
            "count": int(count) if count is not None else None,
            "fired": 0,
            "_re": regex,
        }
        with self.lock:
            self.faults.append(rule)
        return rule

    def list_faults(self) -> list[dict]:
        with self.lock:
            return [{k: v for k, v in r.items() if k != "_re"} for r in self.faults]

    def clear_faults(self) -> None:
        with self.lock:
            self.faults.clear()

    def pick_faults(self, key: str) -> list[dict]:
        """Rules that fire for this request ("METHOD /path"), in rule order.

        The rng is only consulted for rate < 1 so rate-1 rules do not shift the
        random sequence; exhausted rules are removed.
        """
        fired = []
        with self.lock:
            for rule in list(self.faults):
                if not rule["_re"].search(key):
                    continue
                if rule["rate"] < 1 and self.rng.random() >= rule["rate"]:
                    continue
                rule["fired"] += 1
                if rule["count"] is not None and rule["fired"] >= rule["count"]:
                    self.faults.remove(rule)
                fired.append(dict(rule))
        return fired

    # --- write log ----------------------------------------------------------
    def record_write(self, method: str, path: str, body: Any, status: int, dropped: bool = False,
                     tenant: str | None = None) -> dict:
        """``tenant``: whose write it was, where the simulator knows (ConnectWise: the company id of
        the credentials): ids of different tenants may be alike."""
        with self.lock:
            entry = {"seq": next(self._write_seq), "at": utcnow_iso(), "method": method,
                     "path": path, "body": body, "status": status, "dropped": dropped, "tenant": tenant}
            self.writes.append(entry)
            return entry

    def writes_since(self, since: int = 0) -> list[dict]:
        with self.lock:
            return [w for w in self.writes if w["seq"] > since]

    def clear_writes(self) -> None:
        with self.lock:
            self.writes.clear()

    # --- request counts -----------------------------------------------------
    def count_request(self, key: str, route_key: str | None) -> None:
        with self.lock:
            self.total += 1
            self.counts[key] += 1
            if route_key:
                self.route_counts[route_key] += 1

    def request_counts(self, reset: bool = False) -> dict:
        with self.lock:
            out = {"total": self.total, "by_endpoint": dict(self.counts),
                   "by_route": dict(self.route_counts)}
            if reset:
                self.total = 0
                self.counts.clear()
                self.route_counts.clear()
            return out

    # --- helpers for simulators -------------------------------------------
    def error_response(self, status: int, message: str, headers: dict | None = None) -> flask.Response:
        """A response in the vendor's error shape (self.error_body)."""
        body, extra = self.error_body(status, message)
        resp = flask.make_response(flask.jsonify(body), status)
        for k, v in {**(extra or {}), **(headers or {})}.items():
            resp.headers[k] = str(v)
        return resp


def _is_admin(path: str) -> bool:
    return path == ADMIN_PREFIX or path.startswith(ADMIN_PREFIX + "/")


def _request_body() -> Any:
    data = flask.request.get_json(silent=True)
    if data is not None:
        return data
    text = flask.request.get_data(as_text=True)
    return text or None


class _DropMiddleware:
    """Aborts the TCP connection after the app ran when a drop_after_write fault fired.

    Raising ConnectionAbortedError from the WSGI call makes werkzeug treat it as a
    client-dropped connection (no 500, no log noise); nothing was written yet.
    """

    def __init__(self, wsgi_app):
        self.wsgi_app = wsgi_app

    def __call__(self, environ, start_response):
        result = self.wsgi_app(environ, start_response)
        if not environ.get("sim.drop"):
            return result
        if hasattr(result, "close"):
            result.close()
        sock = environ.get("werkzeug.socket")
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            sock.close()
        raise ConnectionAbortedError("simulator: connection dropped after write")


def make_app(name: str, seed: int = 0) -> flask.Flask:
    app = flask.Flask(name)
    app.config["SIM_NAME"] = name
    app.config["SIM_LOG_REQUESTS"] = False  # main() turns on one JSON line per request
    app.json.sort_keys = False  # keep vendor field order
    kit = SimKit(name, seed)
    app.extensions["sim"] = kit
    app.wsgi_app = _DropMiddleware(app.wsgi_app)

    @app.before_request
    def _sim_before():
        flask.g.sim_start = time.monotonic()
        path = flask.request.path
        if _is_admin(path):
            return None
        key = f"{flask.request.method} {path}"
        rule = flask.request.url_rule
        kit.count_request(key, f"{flask.request.method} {rule.rule}" if rule else None)
        for fault in kit.pick_faults(key):
            flask.g.sim_fault = fault["kind"]
            kind = fault["kind"]
            if kind == "latency":
                time.sleep(fault["seconds"] or 0)
            elif kind == "timeout":
                time.sleep(fault["seconds"] if fault["seconds"] is not None else 30)
                return kit.error_response(504, "Gateway Timeout")
            elif kind == "status":
                status = fault["status"]
                headers = {}
                if status == 429:
                    secs = fault["seconds"] if fault["seconds"] is not None else 1
                    headers["Retry-After"] = str(int(secs) if float(secs).is_integer() else secs)
                return kit.error_response(status, f"simulated fault {status}", headers)
            elif kind == "drop_after_write":
                flask.request.environ["sim.drop"] = True
        return None

    @app.after_request
    def _sim_after(resp: flask.Response):
        req = flask.request
        if not _is_admin(req.path):
            dropped = bool(req.environ.get("sim.drop"))
            if req.method != "GET" and resp.status_code < 400:
                kit.record_write(req.method, req.path, _request_body(), resp.status_code, dropped,
                                 flask.g.get("sim_tenant"))
            if app.config["SIM_LOG_REQUESTS"]:
                ms = (time.monotonic() - flask.g.get("sim_start", time.monotonic())) * 1000
                line = {"at": utcnow_iso(), "sim": name, "method": req.method,
                        "path": req.full_path.rstrip("?"), "status": resp.status_code,
                        "ms": round(ms, 1)}
                if flask.g.get("sim_fault"):
                    line["fault"] = flask.g.sim_fault
                if dropped:
                    line["dropped"] = True
                print(json.dumps(line), flush=True)
        return resp

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        # Vendor paths get the vendor's error shape; admin paths a plain one.
        if _is_admin(flask.request.path):
            return flask.jsonify({"error": exc.description, "status": exc.code}), exc.code
        return kit.error_response(exc.code or 500, exc.description or exc.name)

    # --- admin routes -------------------------------------------------------
    @app.get(ADMIN_PREFIX + "/health")
    def _sim_health():
        return {"status": "ok", "simulator": name}

    @app.get(ADMIN_PREFIX + "/faults")
    def _sim_faults_list():
        return flask.jsonify(kit.list_faults())

    @app.post(ADMIN_PREFIX + "/faults")
    def _sim_faults_add():
        spec = flask.request.get_json(silent=True)
        if not isinstance(spec, dict):
            return {"error": "JSON object body required"}, 400
        try:
            rule = kit.add_fault(spec)
        except (ValueError, TypeError) as exc:
            return {"error": str(exc)}, 400
        return {"id": rule["id"]}, 201

    @app.delete(ADMIN_PREFIX + "/faults")
    def _sim_faults_clear():
        kit.clear_faults()
        return {"cleared": True}

    @app.get(ADMIN_PREFIX + "/writes")
    def _sim_writes():
        since = flask.request.args.get("since", default=0, type=int)
        return flask.jsonify(kit.writes_since(since))

    @app.delete(ADMIN_PREFIX + "/writes")
    def _sim_writes_clear():
        kit.clear_writes()
        return {"cleared": True}

    @app.get(ADMIN_PREFIX + "/requests/count")
    def _sim_request_count():
        reset = flask.request.args.get("reset", "") in ("1", "true", "yes")
        return kit.request_counts(reset=reset)

    return app


class _QuietHandler(WSGIRequestHandler):
    """No werkzeug access log: the kit logs JSON lines itself (when enabled)."""

    def log_request(self, code="-", size="-") -> None:
        pass


def serve(app, host: str = "127.0.0.1", port: int = 0, threaded: bool = True) -> BaseWSGIServer:
    """Create (not start) a werkzeug server; call serve_forever(), e.g. in a thread."""
    return make_server(host, port, app, threaded=threaded, request_handler=_QuietHandler)


def main(app_factory: Callable[..., flask.Flask], default_port: int,
         add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
         configure: Callable[[flask.Flask, argparse.Namespace], None] | None = None,
         argv: list[str] | None = None) -> int:
    """CLI entry: app_factory(seed) builds the app; optional hooks add flags and apply them."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=default_port)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seed-file", help="JSON seed document, loaded via POST /_sim/seed")
    if add_arguments:
        add_arguments(parser)
    args = parser.parse_args(argv)

    app = app_factory(args.seed)
    if configure:
        configure(app, args)
    if args.seed_file:
        with open(args.seed_file, encoding="utf-8") as fh:
            doc = json.load(fh)
        resp = app.test_client().post(ADMIN_PREFIX + "/seed", json=doc)
        if resp.status_code >= 300:
            print(f"seed failed: {resp.status_code} {resp.get_data(as_text=True)}", file=sys.stderr)
            return 2
    app.config["SIM_LOG_REQUESTS"] = True

    server = serve(app, args.host, args.port)

    def _stop(signum, frame):
        # shutdown() blocks until serve_forever returns, so run it off the main thread.
        threading.Thread(target=server.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    print(json.dumps({"at": utcnow_iso(), "sim": app.config["SIM_NAME"], "event": "listening",
                      "host": args.host, "port": server.server_port}), flush=True)
    try:
        server.serve_forever()
    finally:
        server.server_close()
    return 0


class SlidingWindowLimit:
    """At most `limit` hits per key within any `window_seconds` span (thread-safe).

    Keeps the hit times per key (at most `limit` of them), so memory is bounded.
    reset_seconds is the time until the oldest counted hit leaves the window.
    """

    def __init__(self, limit: int, window_seconds: float, clock: Callable[[], float] = time.monotonic):
        self.limit = int(limit)
        self.window = float(window_seconds)
        self.clock = clock
        self._lock = threading.Lock()
        self._hits: dict[Any, collections.deque] = {}

    def _prune(self, key, now: float) -> collections.deque:
        q = self._hits.setdefault(key, collections.deque())
        while q and q[0] <= now - self.window:
            q.popleft()
        return q

    def _reset_in(self, q: collections.deque, now: float) -> float:
        # rounded so float noise does not turn 60.0 into 60.000000001 (ceil -> 61)
        return round(max(0.0, q[0] + self.window - now), 6) if q else 0.0

    def hit(self, key) -> tuple[bool, int, float]:
        with self._lock:
            now = self.clock()
            q = self._prune(key, now)
            if len(q) >= self.limit:
                return False, 0, self._reset_in(q, now)
            q.append(now)
            return True, self.limit - len(q), self._reset_in(q, now)

    def peek(self, key) -> tuple[int, int, float]:
        with self._lock:
            now = self.clock()
            q = self._prune(key, now)
            return len(q), max(0, self.limit - len(q)), self._reset_in(q, now)

    def configure(self, limit: int | None = None, window_seconds: float | None = None) -> None:
        with self._lock:
            if limit is not None:
                self.limit = int(limit)
            if window_seconds is not None:
                self.window = float(window_seconds)

    def reset(self) -> None:
        with self._lock:
            self._hits.clear()


class ConcurrencyGate:
    """Per-key count of in-flight requests with a ceiling (thread-safe)."""

    def __init__(self, max_in_flight: int):
        self.max_in_flight = int(max_in_flight)
        self._lock = threading.Lock()
        self._in_flight: collections.Counter = collections.Counter()

    def acquire(self, key) -> bool:
        with self._lock:
            if self._in_flight[key] >= self.max_in_flight:
                return False
            self._in_flight[key] += 1
            return True

    def release(self, key) -> None:
        with self._lock:
            if self._in_flight[key] > 0:
                self._in_flight[key] -= 1
            if self._in_flight[key] == 0:
                del self._in_flight[key]

    def in_flight(self, key) -> int:
        with self._lock:
            return self._in_flight[key]
