"""common.vendor_client.VendorClient against a tiny scripted HTTP server on 127.0.0.1."""
import email.utils
import http.server
import json
import logging
import socket
import threading
import time

import pytest
from prometheus_client import REGISTRY

from common.vendor_client import (MalformedRecord, NotFound, RateLimited, Rejected, Timeout, Transient,
                                  Unauthorized, VendorClient, VendorError)


class Script:
    """What the server answers, per path, in order; then 200 {"ok": true}. Counts calls."""

    def __init__(self):
        self.plans: dict[str, list[dict]] = {}
        self.calls: list[dict] = []
        self.lock = threading.Lock()

    def on(self, path, *answers):
        self.plans.setdefault(path, []).extend(answers)

    def next(self, path):
        with self.lock:
            plan = self.plans.get(path)
            return plan.pop(0) if plan else {"status": 200, "body": {"ok": True}}

    def count(self, method, path):
        return sum(1 for c in self.calls if c["method"] == method and c["path"] == path)


def _handler(script):
    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args):
            pass

        def _serve(self):
            length = int(self.headers.get("Content-Length") or 0)
            body = self.rfile.read(length) if length else b""
            path = self.path.split("?")[0]
            with script.lock:
                script.calls.append({"method": self.command, "path": path, "query": self.path,
                                     "headers": dict(self.headers), "body": body})
            answer = script.next(path)
            if answer.get("delay"):
                time.sleep(answer["delay"])
            if answer.get("drop"):
                self.close_connection = True
                self.connection.shutdown(socket.SHUT_RDWR)
                return
            raw = answer.get("raw")
            payload = raw.encode() if raw is not None else json.dumps(answer.get("body", {})).encode()
            self.send_response(answer.get("status", 200))
            self.send_header("Content-Type", "application/json" if raw is None else "text/html")
            self.send_header("Content-Length", str(len(payload)))
            for k, v in answer.get("headers", {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(payload)

        do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

    return Handler


@pytest.fixture()
def server():
    script = Script()
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _handler(script))
    httpd.daemon_threads = True
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    script.base = f"http://127.0.0.1:{httpd.server_port}/api/v1/"
    yield script
    httpd.shutdown()
    httpd.server_close()


class Sleeps(list):
    def __call__(self, seconds):
        self.append(seconds)


class FakeVendor(VendorClient):
    vendor = "unittest"

    def auth_headers(self):
        return {"Authorization": "Bearer tok-SECRET-123", "X-Api-Key": "key-SECRET-456"}


def make(server, **kw):
    sleeps = Sleeps()
    kw.setdefault("timeout", (1.0, 2.0))
    client = FakeVendor(server.base, sleep=sleeps, **kw)
    return client, sleeps


def sample(name, **labels):
    return REGISTRY.get_sample_value(name, labels) or 0.0


def requests_total(endpoint, status, vendor="unittest"):
    return sample("vendor_requests_total", vendor=vendor, endpoint=endpoint, status=status)


def error_body(msg):
    return {"message": msg}


# --- status codes -> typed errors ---------------------------------------------------------
@pytest.mark.parametrize("status,cls", [
    (400, Rejected), (401, Unauthorized), (403, Unauthorized), (404, NotFound), (409, Rejected),
    (422, Rejected), (429, RateLimited), (500, Transient), (502, Transient), (503, Transient),
    (504, Timeout), (408, Transient)])
def test_status_maps_to_typed_error(server, status, cls):
    server.on("/api/v1/things/7", {"status": status, "body": error_body(f"vendor says {status}")})
    client, sleeps = make(server, read_retries=0)
    with pytest.raises(cls) as info:
        client.request("GET", "things/7", "GET /things/{id}")
    err = info.value
    assert type(err) is cls
    assert (err.vendor, err.endpoint, err.status) == ("unittest", "GET /things/{id}", status)
    assert err.message == json.dumps(error_body(f"vendor says {status}"))
    assert str(err) == f'unittest GET /things/{{id}} {status}: {{"message": "vendor says {status}"}}'
    assert sleeps == []
    assert server.count("GET", "/api/v1/things/7") == 1


def test_not_found_is_rejected():
    assert issubclass(NotFound, Rejected) and issubclass(Rejected, VendorError)


def test_success_returns_response_and_joins_paths(server):
    server.on("/api/v1/things", {"status": 201, "body": {"id": 9}})
    client, _ = make(server)
    resp = client.request("POST", "/things", "POST /things", json={"name": "x"})
    assert resp.status_code == 201 and resp.json() == {"id": 9}
    call = server.calls[-1]
    assert json.loads(call["body"]) == {"name": "x"}
    assert call["headers"]["Authorization"] == "Bearer tok-SECRET-123"
    # absolute URLs are used as they are; params are sent
    absolute = server.base.replace("/api/v1/", "/other")
    assert client.get_json(absolute, "GET /other", params={"a": "1"}) == {"ok": True}
    assert server.calls[-1]["query"] == "/other?a=1"


def test_get_json_on_non_json_answer_is_transient(server):
    server.on("/api/v1/page", {"status": 200, "raw": "<html>captive portal</html>"})
    client, _ = make(server)
    with pytest.raises(Transient) as info:
        client.get_json("page", "GET /page")
    assert "captive portal" in info.value.message and info.value.status == 200


# --- retries --------------------------------------------------------------------------------
def test_safe_get_retried_on_500_and_429_then_succeeds(server):
    server.on("/api/v1/things", {"status": 500, "body": error_body("boom")},
              {"status": 429, "body": error_body("slow down"), "headers": {"Retry-After": "2"}},
              {"status": 200, "body": {"data": [1, 2]}})
    client, sleeps = make(server, backoff=0.5)
    assert client.get_json("things", "GET /things") == {"data": [1, 2]}
    assert server.count("GET", "/api/v1/things") == 3
    assert len(sleeps) == 2
    assert 0.25 <= sleeps[0] <= 0.5  # backoff * 2**0 with jitter in [0.5, 1]
    assert sleeps[1] == 2.0  # Retry-After honoured exactly


def test_safe_get_gives_up_after_read_retries(server):
    server.on("/api/v1/things", *[{"status": 503, "body": error_body("down")}] * 5)
    client, sleeps = make(server, read_retries=3, backoff=0.5)
    with pytest.raises(Transient) as info:
        client.request("GET", "things", "GET /things")
    assert info.value.status == 503 and info.value.message == '{"message": "down"}'
    assert server.count("GET", "/api/v1/things") == 4
    assert len(sleeps) == 3
    for i, wait in enumerate(sleeps):  # exponential: 0.5, 1, 2 each jittered to [half, full]
        assert 0.5 * 2 ** i / 2 <= wait <= 0.5 * 2 ** i


def test_unsafe_post_not_retried_on_500(server):
    server.on("/api/v1/things", {"status": 500, "body": error_body("boom")})
    client, sleeps = make(server)
    with pytest.raises(Transient) as info:
        client.request("POST", "things", "POST /things", json={"q": 1})
    assert info.value.request_sent is True
    assert server.count("POST", "/api/v1/things") == 1 and sleeps == []


def test_unsafe_post_not_retried_on_429(server):
    server.on("/api/v1/things", {"status": 429, "headers": {"Retry-After": "1"}})
    client, sleeps = make(server)
    with pytest.raises(RateLimited) as info:
        client.request("POST", "things", "POST /things", json={})
    assert info.value.retry_after == 1.0
    assert server.count("POST", "/api/v1/things") == 1 and sleeps == []


def test_unsafe_post_read_timeout_is_timeout_not_retried(server):
    server.on("/api/v1/things", {"delay": 0.5, "status": 201})
    client, sleeps = make(server, timeout=(1.0, 0.1))
    with pytest.raises(Timeout) as info:
        client.request("POST", "things", "POST /things", json={"q": 1})
    assert info.value.status is None and info.value.request_sent is None
    assert server.count("POST", "/api/v1/things") == 1 and sleeps == []


def test_unsafe_post_dropped_response_is_timeout_not_retried(server):
    server.on("/api/v1/things", {"drop": True})
    client, sleeps = make(server)
    with pytest.raises(Timeout) as info:
        client.request("PATCH", "things", "PATCH /things", json={"q": 1})
    assert info.value.request_sent is None
    assert server.count("PATCH", "/api/v1/things") == 1 and sleeps == []


def test_post_marked_safe_is_retried(server):
    server.on("/api/v1/query", {"status": 500}, {"status": 200, "body": {"items": []}})
    client, sleeps = make(server)
    resp = client.request("POST", "query", "POST /query", json={"filter": []}, safe=True)
    assert resp.json() == {"items": []}
    assert server.count("POST", "/api/v1/query") == 2 and len(sleeps) == 1


def test_get_read_timeout_retried_then_timeout(server):
    server.on("/api/v1/slow", *[{"delay": 0.4}] * 3)
    client, sleeps = make(server, timeout=(1.0, 0.1), read_retries=2)
    with pytest.raises(Timeout):
        client.request("GET", "slow", "GET /slow")
    assert server.count("GET", "/api/v1/slow") == 3 and len(sleeps) == 2


def _refused_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    return f"http://127.0.0.1:{port}/api/"


def test_connection_refused_is_transient_not_sent():
    sleeps = Sleeps()
    client = FakeVendor(_refused_url(), read_retries=2, sleep=sleeps, timeout=(1.0, 1.0))
    before = requests_total("GET /x", "Transient")
    with pytest.raises(Transient) as info:
        client.request("GET", "x", "GET /x")
    assert info.value.request_sent is False and info.value.status is None
    assert "could not connect" in info.value.message
    assert len(sleeps) == 2
    assert requests_total("GET /x", "Transient") - before == 3


def test_unsafe_call_resent_once_when_never_sent():
    sleeps = Sleeps()
    client = FakeVendor(_refused_url(), read_retries=3, sleep=sleeps, timeout=(1.0, 1.0))
    before = requests_total("POST /x", "Transient")
    with pytest.raises(Transient) as info:
        client.request("POST", "x", "POST /x", json={})
    assert info.value.request_sent is False
    assert len(sleeps) == 1
    assert requests_total("POST /x", "Transient") - before == 2


# --- Retry-After ---------------------------------------------------------------------------
def test_retry_after_http_date_and_rate_limit_reset(server):
    when = email.utils.formatdate(time.time() + 5, usegmt=True)
    server.on("/api/v1/a", {"status": 429, "headers": {"Retry-After": when}})
    server.on("/api/v1/b", {"status": 429, "headers": {"X-RateLimit-Reset": "7"}})
    server.on("/api/v1/c", {"status": 429, "headers": {"X-RateLimit-Reset": str(int(time.time()) + 9)}})
    server.on("/api/v1/d", {"status": 429})
    client, sleeps = make(server)
    for path in "abcd":
        client.request("GET", path, f"GET /{path}")
    assert 3.0 <= sleeps[0] <= 5.0
    assert sleeps[1] == 7.0
    assert 7.0 <= sleeps[2] <= 9.0
    assert 0.25 <= sleeps[3] <= 0.5  # no hint: plain backoff


def test_retry_after_beyond_max_wait_is_raised_not_slept(server):
    server.on("/api/v1/things", {"status": 429, "headers": {"Retry-After": "45"},
                                 "body": error_body("try again in 45 seconds")})
    client, sleeps = make(server, max_wait=30)
    with pytest.raises(RateLimited) as info:
        client.request("GET", "things", "GET /things")
    assert info.value.retry_after == 45.0
    assert info.value.message == '{"message": "try again in 45 seconds"}'
    assert sleeps == [] and server.count("GET", "/api/v1/things") == 1


# --- credentials refresh ------------------------------------------------------------------
class RefreshingClient(FakeVendor):
    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.token, self.refreshes = "old", 0

    def auth_headers(self):
        return {"Authorization": f"Bearer {self.token}"}

    def on_unauthorized(self):
        self.refreshes += 1
        self.token = f"new{self.refreshes}"
        return True


def test_unauthorized_refreshes_once_then_retries(server):
    server.on("/api/v1/me", {"status": 401}, {"status": 200, "body": {"me": 1}})
    client = RefreshingClient(server.base, sleep=Sleeps())
    assert client.get_json("me", "GET /me") == {"me": 1}
    assert client.refreshes == 1
    assert [c["headers"]["Authorization"] for c in server.calls] == ["Bearer old", "Bearer new1"]


def test_unauthorized_twice_fails_and_403_does_not_refresh(server):
    server.on("/api/v1/me", {"status": 401}, {"status": 401, "body": error_body("expired")})
    server.on("/api/v1/admin", {"status": 403, "body": error_body("forbidden")})
    client = RefreshingClient(server.base, sleep=Sleeps())
    with pytest.raises(Unauthorized) as info:
        client.request("POST", "me", "POST /me")
    assert info.value.status == 401 and client.refreshes == 1
    assert server.count("POST", "/api/v1/me") == 2
    with pytest.raises(Unauthorized) as info:
        client.request("GET", "admin", "GET /admin")
    assert info.value.status == 403 and client.refreshes == 1


def test_auth_false_skips_auth_headers(server):
    client, _ = make(server)
    client.request("POST", "token", "POST /token", headers={"Authorization": "Basic abc"}, auth=False)
    assert server.calls[-1]["headers"]["Authorization"] == "Basic abc"
    assert "X-Api-Key" not in server.calls[-1]["headers"]


# --- metrics and logs ---------------------------------------------------------------------
def test_metrics_per_attempt_with_labels(server):
    server.on("/api/v1/m/1", {"status": 500}, {"status": 200})
    client, _ = make(server, read_retries=1)
    ep = "GET /m/{id}"
    b500, b200 = requests_total(ep, "500"), requests_total(ep, "200")
    bcount = sample("vendor_request_seconds_count", vendor="unittest", endpoint=ep)
    client.request("GET", "m/1", ep)
    assert requests_total(ep, "500") - b500 == 1
    assert requests_total(ep, "200") - b200 == 1
    assert sample("vendor_request_seconds_count", vendor="unittest", endpoint=ep) - bcount == 2


def test_timeout_metric_label(server):
    server.on("/api/v1/slow", {"delay": 0.4}, {"delay": 0.4})
    client, _ = make(server, timeout=(1.0, 0.1), read_retries=1)
    before = requests_total("GET /slow", "Timeout")
    seconds = sample("vendor_request_seconds_count", vendor="unittest", endpoint="GET /slow")
    with pytest.raises(Timeout):
        client.request("GET", "slow", "GET /slow")
    assert requests_total("GET /slow", "Timeout") - before == 2
    assert sample("vendor_request_seconds_count", vendor="unittest", endpoint="GET /slow") - seconds == 2


def test_no_secret_in_logs_or_errors(server, caplog):
    caplog.set_level(logging.DEBUG)
    server.on("/api/v1/s", {"status": 500, "body": error_body("boom")}, {"status": 401},
              {"drop": True})
    client, _ = make(server, read_retries=0)
    errors = []
    for _ in range(3):
        with pytest.raises(VendorError) as info:
            client.request("GET", "s", "GET /s")
        errors.append(info.value)
    client.request("GET", "s", "GET /s")
    assert [type(e) for e in errors] == [Transient, Unauthorized, Timeout]
    text = caplog.text + " ".join(str(e) + repr(e) for e in errors)
    assert "SECRET" not in text
    # the server did get the credentials, and the log lines say what happened
    assert server.calls[0]["headers"]["Authorization"] == "Bearer tok-SECRET-123"
    ours = [r.getMessage() for r in caplog.records if r.name == "common.vendor_client"]
    assert any("vendor=unittest endpoint=GET /s status=500 attempt=1" in m for m in ours)
    assert any("status=401" in m and "Unauthorized" in m for m in ours)
    assert any("status=Timeout" in m for m in ours)


def test_malformed_record_names_id_and_field():
    err = MalformedRecord("5000002", "products[0].quantity", "Not a valid integer.", vendor="ingram",
                          endpoint="GET /subscriptions/{id}")
    assert "5000002" in str(err) and "products[0].quantity" in str(err)
    assert (err.record_id, err.field, err.problem) == ("5000002", "products[0].quantity", "Not a valid integer.")
    assert err.errors == {"products[0].quantity": "Not a valid integer."}
    assert isinstance(err, VendorError)
