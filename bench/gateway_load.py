"""The gateway bench's load driver: closed-loop HTTP clients in their own process.

python -m bench.gateway_load PLAN.json OUT.json

PLAN: {"base", "users": [email...], "password", "duration", "warmup", "seed", "think",
       "views": [{"weight", "screen", "kind", "params": [{...}, ...]}], "counts": [{...}, ...]}
Each client (a thread with its own requests.Session) is signed in as its own user first (session
cookie + CSRF header, as a browser or the integration tests do; all sign-ins before the clock
starts, announced on stdout as `WINDOW start record_from end`) and then, until the end, opens a screen
view: one list request (a view drawn by weight, its parameters drawn from the view's list), then
the tab counts the screen shows (`counts`: per status, per_page=1). Requests that start during the
warm-up are made but not recorded. Every latency is wall time around one request, in ms.

OUT: {"samples": {label: [ms...]}, "errors": {label: n}, "error_examples": [...], "elapsed", "cpu_s"}

Why threads and requests, not a load library: the figure wanted is a small closed-loop run
(20 clients, a fixed window, percentiles per query kind); `requests` is already a dependency, the
threads spend their time waiting on sockets, and bench.results computes the percentiles. Locust
would add gevent (monkey-patching, beside the project's eventlet) and its own dependency set to
pyproject for no figure we need. The driver is a separate, un-patched process (the bench's own
process imports nameko/kombu), and its CPU time is reported so its share of the 2 cores is known.
"""
import json
import random
import sys
import threading
import time
from collections import defaultdict

import requests
from requests.adapters import HTTPAdapter


def sign_in(plan, email):
    """A session of its own, signed in (session cookie + CSRF header); None when refused."""
    s = requests.Session()
    s.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1, max_retries=0))
    r = s.post(f"{plan['base']}/api/v1/session", json={"email": email, "password": plan["password"]}, timeout=120)
    r.raise_for_status()
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s


def client(plan, s, index, window, out, lock):
    rng = random.Random(plan["seed"] * 1000 + index)
    base = plan["base"]
    start_at, record_from, end_at = window
    samples, errors, examples = defaultdict(list), defaultdict(int), []
    views = plan["views"]
    weights = [v["weight"] for v in views]
    time.sleep(max(0.0, start_at - time.time()))

    def get(label, path, params):
        t = time.time()
        if t >= end_at:
            return False
        try:
            r = s.get(f"{base}{path}", params=params, timeout=plan.get("timeout", 30))
            ok = r.status_code == 200 and "items" in r.json()
            problem = None if ok else f"{r.status_code} {r.text[:200]}"
        except Exception as exc:  # noqa: BLE001 - a timeout or a reset is an error of the run
            ok, problem = False, f"{type(exc).__name__}: {exc}"
        ms = (time.time() - t) * 1000
        if t >= record_from:
            samples[label].append(ms)
            if not ok:
                errors[label] += 1
                if len(examples) < 3:
                    examples.append(f"{label} {params}: {problem}")
        return True

    while time.time() < end_at:
        view = rng.choices(views, weights=weights)[0]
        path = f"/api/v1/mapping/{view['screen']}"
        if not get(f"{view['screen']} {view['kind']}", path, dict(rng.choice(view["params"]))):
            break
        for params in plan["counts"]:
            if not get(f"{view['screen']} tab counts", path, dict(params)):
                break
        if plan.get("think"):
            time.sleep(rng.uniform(0, 2 * plan["think"]))
    with lock:
        for k, v in samples.items():
            out["samples"].setdefault(k, []).extend(v)
        for k, v in errors.items():
            out["errors"][k] = out["errors"].get(k, 0) + v
        out["error_examples"].extend(examples[:3 - len(out["error_examples"])])


def run(plan, announce=lambda start, record_from, end: None):
    """Sign every client in first (one after another: argon2 is deliberately slow and would
    otherwise stall the gateway inside the window), then start them together 1 s later."""
    out = {"samples": {}, "errors": {}, "error_examples": [], "login_failures": []}
    lock = threading.Lock()
    sessions = []
    for email in plan["users"]:
        try:
            sessions.append(sign_in(plan, email))
        except Exception as exc:  # noqa: BLE001 - reported, the run goes on with fewer clients
            out["login_failures"].append(f"{email}: {exc}")
    start_at = time.time() + 1.0
    window = (start_at, start_at + plan["warmup"], start_at + plan["warmup"] + plan["duration"])
    announce(*window)
    cpu0 = time.process_time()
    threads = [threading.Thread(target=client, args=(plan, s, i, window, out, lock), daemon=True)
               for i, s in enumerate(sessions)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=window[2] - time.time() + plan.get("timeout", 30) + 10)
    out["measured_from"], out["measured_to"] = window[1], window[2]
    out["cpu_s"] = round(time.process_time() - cpu0, 2)
    out["clients"] = len(sessions)
    return out


def main(argv=None):
    argv = argv if argv is not None else sys.argv[1:]
    with open(argv[0]) as f:
        plan = json.load(f)
    # the caller samples CPU over the same window: it reads this line
    out = run(plan, announce=lambda *window: print("WINDOW", *window, flush=True))
    with open(argv[1], "w") as f:
        json.dump(out, f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
