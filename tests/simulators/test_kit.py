"""Tests for simulators/kit.py: admin routes, fault kinds, write log, limits."""
import threading
import time

import pytest
import requests

from simulators import kit


def _make_app(seed=0):
    app = kit.make_app("demo", seed=seed)
    state = {"items": []}

    @app.get("/items")
    def list_items():
        return {"items": state["items"]}

    @app.post("/items")
    def add_item():
        with app.extensions["sim"].lock:
            state["items"].append(kit.flask.request.get_json())
        return {"ok": True}, 201

    @app.post("/fail")
    def fail():
        return {"no": True}, 400

    app.extensions["sim"].error_body = lambda status, msg: ({"code": status, "msg": msg}, {"X-Vendor": "demo"})
    app.state = state
    return app


@pytest.fixture()
def sim():
    app = _make_app()
    server = kit.serve(app, port=0)
    t = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    base = f"http://127.0.0.1:{server.server_port}"
    yield app, base
    server.shutdown()
    server.server_close()


def test_health_and_counts(sim):
    app, base = sim
    assert requests.get(base + "/_sim/health").json() == {"status": "ok", "simulator": "demo"}
    requests.get(base + "/items")
    requests.get(base + "/items")
    requests.post(base + "/items", json={"a": 1})
    requests.get(base + "/nope")
    counts = requests.get(base + "/_sim/requests/count", params={"reset": 1}).json()
    assert counts["total"] == 4
    assert counts["by_endpoint"] == {"GET /items": 2, "POST /items": 1, "GET /nope": 1}
    assert counts["by_route"]["GET /items"] == 2
    assert requests.get(base + "/_sim/requests/count").json()["total"] == 0


def test_unknown_path_uses_vendor_error_body(sim):
    _, base = sim
    r = requests.get(base + "/nope")
    assert r.status_code == 404
    assert r.json()["code"] == 404
    assert r.headers["X-Vendor"] == "demo"


def test_write_log_records_successful_writes_only(sim):
    _, base = sim
    requests.post(base + "/items", json={"a": 1})
    requests.post(base + "/fail", json={"b": 2})
    requests.post(base + "/items", json={"c": 3})
    log = requests.get(base + "/_sim/writes").json()
    assert [(w["method"], w["path"], w["body"], w["status"], w["dropped"]) for w in log] == [
        ("POST", "/items", {"a": 1}, 201, False),
        ("POST", "/items", {"c": 3}, 201, False),
    ]
    since = requests.get(base + "/_sim/writes", params={"since": log[0]["seq"]}).json()
    assert [w["body"] for w in since] == [{"c": 3}]
    assert requests.delete(base + "/_sim/writes").status_code == 200
    assert requests.get(base + "/_sim/writes").json() == []


def test_fault_status_429_with_retry_after_and_count(sim):
    _, base = sim
    r = requests.post(base + "/_sim/faults", json={"endpoint": "^GET /items$", "kind": "status",
                                                   "status": 429, "seconds": 7, "count": 2})
    assert r.status_code == 201 and r.json()["id"] >= 1
    first = requests.get(base + "/items")
    assert first.status_code == 429
    assert first.headers["Retry-After"] == "7"
    assert first.json() == {"code": 429, "msg": "simulated fault 429"}
    assert requests.get(base + "/items").status_code == 429
    assert requests.get(base + "/items").status_code == 200  # count exhausted
    assert requests.get(base + "/_sim/faults").json() == []
    # POST not matched by the anchored regex
    assert requests.post(base + "/items", json={}).status_code == 201


def test_fault_status_500_and_clear(sim):
    _, base = sim
    requests.post(base + "/_sim/faults", json={"endpoint": "/items", "kind": "status", "status": 500})
    assert requests.get(base + "/items").status_code == 500
    assert len(requests.get(base + "/_sim/faults").json()) == 1
    requests.delete(base + "/_sim/faults")
    assert requests.get(base + "/items").status_code == 200


def test_fault_latency_and_timeout(sim):
    _, base = sim
    requests.post(base + "/_sim/faults", json={"endpoint": "GET /items", "kind": "latency",
                                               "seconds": 0.3, "count": 1})
    t0 = time.monotonic()
    assert requests.get(base + "/items").status_code == 200
    assert time.monotonic() - t0 >= 0.3
    requests.post(base + "/_sim/faults", json={"endpoint": "GET /items", "kind": "timeout",
                                               "seconds": 1.0, "count": 1})
    with pytest.raises(requests.exceptions.Timeout):
        requests.get(base + "/items", timeout=0.2)


def test_fault_timeout_returns_504_to_patient_client(sim):
    _, base = sim
    requests.post(base + "/_sim/faults", json={"endpoint": "GET /items", "kind": "timeout",
                                               "seconds": 0.1, "count": 1})
    assert requests.get(base + "/items").status_code == 504


def test_drop_after_write_applies_write_but_drops_connection(sim):
    app, base = sim
    requests.post(base + "/_sim/faults", json={"endpoint": "^POST /items$", "kind": "drop_after_write",
                                               "count": 1})
    with pytest.raises(requests.exceptions.ConnectionError):
        requests.post(base + "/items", json={"x": 1}, timeout=5)
    assert app.state["items"] == [{"x": 1}]
    log = requests.get(base + "/_sim/writes").json()
    assert len(log) == 1 and log[0]["dropped"] is True and log[0]["body"] == {"x": 1}
    # next write is normal again
    assert requests.post(base + "/items", json={"y": 2}).status_code == 201
    assert requests.get(base + "/_sim/writes").json()[-1]["dropped"] is False


def test_bad_fault_specs_rejected(sim):
    _, base = sim
    assert requests.post(base + "/_sim/faults", json={"kind": "explode"}).status_code == 400
    assert requests.post(base + "/_sim/faults", json={"kind": "status", "endpoint": "("}).status_code == 400
    assert requests.post(base + "/_sim/faults", json={"kind": "status", "rate": 2}).status_code == 400


def test_fault_rate_is_deterministic_under_seed():
    def pattern(seed):
        app = _make_app(seed)
        app.extensions["sim"].add_fault({"endpoint": "GET /items", "kind": "status", "status": 503,
                                         "rate": 0.5})
        client = app.test_client()
        return [client.get("/items").status_code for _ in range(40)]

    a, b = pattern(7), pattern(7)
    assert a == b
    assert 503 in a and 200 in a
    assert pattern(8) != a


def test_sliding_window_limit():
    now = [100.0]
    lim = kit.SlidingWindowLimit(3, 10, clock=lambda: now[0])
    assert lim.hit("k") == (True, 2, 10.0)
    now[0] += 1
    assert lim.hit("k")[:2] == (True, 1)
    assert lim.hit("k")[:2] == (True, 0)
    allowed, remaining, reset = lim.hit("k")
    assert (allowed, remaining, reset) == (False, 0, 9.0)
    assert lim.hit("other")[0] is True
    assert lim.peek("k") == (3, 0, 9.0)
    now[0] += 9.0  # the first hit leaves the window
    assert lim.hit("k")[:2] == (True, 0)
    lim.reset()
    assert lim.peek("k") == (0, 3, 0.0)


def test_concurrency_gate():
    gate = kit.ConcurrencyGate(2)
    assert gate.acquire("a") and gate.acquire("a")
    assert gate.acquire("a") is False
    assert gate.acquire("b") is True
    gate.release("a")
    assert gate.in_flight("a") == 1
    assert gate.acquire("a") is True
