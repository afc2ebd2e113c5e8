"""The stream of marketplace changes a chaos run injects, through the marketplace simulator's admin
API (what customers ordering on the marketplace would do): seat increases and decreases (some to 0),
new lines on a subscription, new subscriptions, cancellations, suspensions and resumptions, spread
over every tenant of the run. Seeded; every change is logged with the line(s) it touched.

With ``cooldown`` a subscription is not changed twice within that many seconds. The default is 0:
two changes in one second share the vendor's whole-second lastModifiedDate, which the sync must
still see (docs/chaos.md, "Findings" 3).
"""
import collections
import random
import threading
import time

import requests

KINDS = {"increase": 30, "decrease": 25, "new_line": 10, "new_subscription": 8, "cancel": 8,
         "suspend": 5, "resume": 6}


class TenantModel:
    """What the driver believes one tenant's marketplace account holds (it is the only writer)."""

    def __init__(self, tenant, state):
        self.tenant = tenant
        self.customers = sorted(str(c["id"]) for c in state["customers"])
        self.subs = {}
        mpns = set()
        for sub in state["subscriptions"]:
            lines = {line["mpn"]: int(line["quantity"]) for line in sub.get("products") or sub.get("lines") or []}
            mpns.update(lines)
            self.subs[str(sub["id"])] = {"status": sub["status"], "customer": str(sub["customerId"]), "lines": lines}
        self.mpns = sorted(mpns)   # the products the tenant's PSA has a service for


class Driver:
    def __init__(self, stack, tenants, seed, rate=1.0, cooldown=0.0, log=print):
        self.stack = stack
        self.rng = random.Random(f"chaos-drive/{seed}")
        self.models = [TenantModel(t, t.market_state()) for t in tenants]
        self.rate = rate
        self.cooldown = cooldown
        self.log = log
        self.changes = []                     # one dict per applied change
        self.counts = collections.Counter()
        self.errors = []
        self.touched = set()                  # (tenant_id, subscription_id, mpn)
        self._last = {}                       # subscription id -> time of its last change
        self._stop = threading.Event()
        self._thread = None

    # --- the loop -----------------------------------------------------------------------------
    def start(self):
        self._thread = threading.Thread(target=self._run, name="chaos-driver", daemon=True)
        self._thread.start()

    def stop(self):
        self._stop.set()
        if self._thread:
            self._thread.join(60)

    def _run(self):
        started = time.time()
        while not self._stop.is_set():
            tick = time.time()
            n = self._poisson(self.rate)
            for _ in range(n):
                try:
                    self.step(started)
                except Exception as exc:  # noqa: BLE001 - the simulator is never killed; report and go on
                    self.errors.append(f"{type(exc).__name__}: {exc}")
            self._stop.wait(max(0.0, 1.0 - (time.time() - tick)))

    def _poisson(self, lam):
        n, p, limit = 0, 1.0, pow(2.718281828, -lam)
        while True:
            p *= self.rng.random()
            if p <= limit:
                return n
            n += 1

    # --- one change ---------------------------------------------------------------------------
    def step(self, started):
        model = self.rng.choice(self.models)
        kinds = list(KINDS)
        kind = self.rng.choices(kinds, [KINDS[k] for k in kinds])[0]
        done = getattr(self, f"_{kind}")(model)
        if done:
            done.update({"t": round(time.time() - started, 1), "tenant": model.tenant.slug, "kind": kind})
            self.changes.append(done)
            self.counts[kind] += 1

    def _free(self, model, statuses, need_lines=True):
        now = time.time()
        return [sid for sid, s in model.subs.items() if s["status"] in statuses and (s["lines"] or not need_lines)
                and now - self._last.get(sid, 0) >= self.cooldown]

    def _change(self, model, sid, body):
        r = requests.post(self.stack.url("sim-marketplace", "/_sim/subscriptions/changes"),
                          json={"changes": [{"id": sid, **body}]}, timeout=30)
        r.raise_for_status()
        out = r.json()
        if out.get("errors"):
            raise RuntimeError(f"change of {sid} refused: {out['errors']}")
        self._last[sid] = time.time()

    def _quantity(self, model, sid, mpn, quantity):
        sub = model.subs[sid]
        before = sub["lines"].get(mpn)
        self._change(model, sid, {"mpn": mpn, "quantity": quantity})
        sub["lines"][mpn] = quantity
        self.touched.add((model.tenant.tenant_id, sid, mpn))
        return {"sub": sid, "mpn": mpn, "before": before, "after": quantity}

    def _increase(self, model):
        subs = self._free(model, ("active",))
        if not subs:
            return None
        sid = self.rng.choice(subs)
        mpn = self.rng.choice(sorted(model.subs[sid]["lines"]))
        return self._quantity(model, sid, mpn, model.subs[sid]["lines"][mpn] + self.rng.randint(1, 5))

    def _decrease(self, model):
        subs = [s for s in self._free(model, ("active",)) if any(q > 0 for q in model.subs[s]["lines"].values())]
        if not subs:
            return None
        sid = self.rng.choice(subs)
        mpn = self.rng.choice(sorted(m for m, q in model.subs[sid]["lines"].items() if q > 0))
        qty = model.subs[sid]["lines"][mpn]
        after = 0 if self.rng.random() < 0.15 else max(0, qty - self.rng.randint(1, 4))
        return self._quantity(model, sid, mpn, after)

    def _new_line(self, model):
        subs = [s for s in self._free(model, ("active",)) if set(model.mpns) - set(model.subs[s]["lines"])]
        if not subs:
            return None
        sid = self.rng.choice(subs)
        mpn = self.rng.choice(sorted(set(model.mpns) - set(model.subs[sid]["lines"])))
        return self._quantity(model, sid, mpn, self.rng.randint(1, 10))

    def _new_subscription(self, model):
        if not model.customers or not model.mpns:
            return None
        customer = self.rng.choice(model.customers)
        mpn = self.rng.choice(model.mpns)
        qty = self.rng.randint(1, 12)
        r = requests.post(self.stack.url("sim-marketplace", "/_sim/subscriptions"), timeout=30,
                          json={"customerId": customer, "lines": [{"mpn": mpn, "quantity": qty}]})
        r.raise_for_status()
        sid = str(r.json()["id"])
        self._last[sid] = time.time()
        model.subs[sid] = {"status": "active", "customer": customer, "lines": {mpn: qty}}
        self.touched.add((model.tenant.tenant_id, sid, mpn))
        return {"sub": sid, "mpn": mpn, "before": None, "after": qty}

    def _status(self, model, statuses, to):
        subs = self._free(model, statuses)
        if not subs:
            return None
        sid = self.rng.choice(subs)
        before = model.subs[sid]["status"]
        self._change(model, sid, {"status": to})
        model.subs[sid]["status"] = to
        for mpn in model.subs[sid]["lines"]:
            self.touched.add((model.tenant.tenant_id, sid, mpn))
        return {"sub": sid, "mpn": None, "before": before, "after": to}

    def _cancel(self, model):
        return self._status(model, ("active", "hold"), "terminated")

    def _suspend(self, model):
        return self._status(model, ("active",), "hold")

    def _resume(self, model):
        return self._status(model, ("hold",), "active")
