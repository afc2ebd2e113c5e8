"""Steps the pipeline and economy benches share: pick subscription lines whose change lands on a
PSA contract line of its own, change them in the marketplace simulator, let the marketplace
service detect them, wait until the PSA ledger shows them posted, and match each change to the
ledger operation that carried it.

Definitions (what the figures mean):
- seen: the `seen_at` of the line's `subscription_line_changed` event, i.e. the instant our
  marketplace sync applied the fetched detail and detected the change (services/marketplace/sync.py
  `_fetch_and_apply`; the outbox row commits with it).
- posted: `posted_at` of the PSA service's ledger row (`postings`) that carried the change: the
  commit right after the simulator answered the write.
- Each changed line is the only line of the change set on its PSA contract line (contract x
  service), so "the first ledger operations on that contract line after the injection" are exactly
  the ones its change caused.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import time

import requests
from sqlalchemy import text

from bench.results import summary


def utcnow():
    return dt.datetime.now(dt.timezone.utc)


def parse_ts(value):
    if isinstance(value, dt.datetime):
        return value if value.tzinfo else value.replace(tzinfo=dt.timezone.utc)
    v = str(value).replace("Z", "+00:00")
    out = dt.datetime.fromisoformat(v)
    return out if out.tzinfo else out.replace(tzinfo=dt.timezone.utc)


@dataclasses.dataclass
class Target:
    """One subscription line the bench may change, and the PSA contract line it bills on."""

    tenant_id: str
    subscription_id: str
    mpn: str
    customer_id: str
    quantity: int           # what the marketplace holds now (kept up to date by inject())
    contract_id: str
    service_id: str

    @property
    def key(self):
        return (self.tenant_id, self.subscription_id, self.mpn)

    @property
    def group(self):
        return (self.tenant_id, self.contract_id, self.service_id)


def candidates(stack, tenants):
    """{tenant_id: [Target, ...]}: per tenant one active, billable line per PSA contract line (a
    contract line several lines feed is used through one of them only, so a change of that line
    is the only change on it)."""
    ids = [t.tenant_id for t in tenants]
    sql = text("""
        SELECT l.tenant_id, l.subscription_id, l.mpn, l.customer_id, l.quantity, k.psa_contract_id,
               pm.psa_service_id
        FROM lines l
        JOIN line_links k ON k.tenant_id = l.tenant_id AND k.subscription_id = l.subscription_id AND k.mpn = l.mpn
        JOIN product_mappings pm ON pm.tenant_id = l.tenant_id AND pm.mpn = l.mpn
        JOIN customer_mappings cm ON cm.tenant_id = l.tenant_id AND cm.customer_id = l.customer_id
        WHERE l.tenant_id = ANY(:ids) AND l.status = 'active' AND k.status = 'mapped' AND pm.status = 'mapped'
          AND cm.status = 'mapped' AND k.psa_contract_id IS NOT NULL AND pm.psa_service_id IS NOT NULL
        ORDER BY l.tenant_id, k.psa_contract_id, pm.psa_service_id, l.subscription_id, l.mpn""")
    out = {t: [] for t in ids}
    used = set()
    with stack.engine("mapping").connect() as conn:
        for r in conn.execute(sql, {"ids": ids}):
            group = (r.tenant_id, r.psa_contract_id, r.psa_service_id)
            if group in used:
                continue
            used.add(group)
            out[r.tenant_id].append(Target(r.tenant_id, r.subscription_id, r.mpn, r.customer_id, int(r.quantity),
                                           str(r.psa_contract_id), str(r.psa_service_id)))
    return out


def spread(pool, n, per_tenant=None, start=0):
    """n targets taken round-robin over the tenants of ``pool`` ({tenant: [Target]}), at most
    ``per_tenant`` from one tenant, beginning at tenant index ``start``. Returns fewer when the pool
    has fewer."""
    tenants = [t for t in pool if pool[t]]
    if not tenants:
        return []
    cursor = {t: 0 for t in tenants}
    picked = []
    i = start
    while len(picked) < n:
        progress = False
        for _ in range(len(tenants)):
            t = tenants[i % len(tenants)]
            i += 1
            if cursor[t] < len(pool[t]) and (per_tenant is None or cursor[t] < per_tenant):
                picked.append(pool[t][cursor[t]])
                cursor[t] += 1
                progress = True
                if len(picked) == n:
                    break
        if not progress:
            break
    return picked


def inject(stack, targets, delta=1):
    """Raise each target's quantity by ``delta`` in the marketplace simulator (bulk admin route).
    Returns the UTC instant just before the first change."""
    at = utcnow()
    changes = []
    for tg in targets:
        tg.quantity += delta
        changes.append({"id": tg.subscription_id, "mpn": tg.mpn, "quantity": tg.quantity})
    for i in range(0, len(changes), 2000):
        r = requests.post(stack.url("sim-marketplace", "/_sim/subscriptions/changes"),
                          json={"changes": changes[i:i + 2000]}, timeout=120)
        r.raise_for_status()
        body = r.json()
        if body.get("errors"):
            raise RuntimeError(f"the marketplace simulator refused changes: {body['errors'][:5]}")
    return at


def trigger_syncs(rpc, tenant_ids):
    """sync_now for every tenant at once (async RPC calls, then their answers)."""
    pending = [rpc.marketplace.sync_now.call_async(t) for t in sorted(set(tenant_ids))]
    return [p.result() for p in pending]


def seen_times(stack, tenant_ids, since):
    """{(tenant, subscription, mpn): [(seen_at, quantity), ...]} from the marketplace outbox rows
    created since ``since`` (sorted by seen_at)."""
    sql = text("""
        SELECT tenant_id, payload->>'subscription_id' AS sid, payload->>'mpn' AS mpn,
               payload->>'seen_at' AS seen_at, (payload->>'quantity')::int AS quantity
        FROM outbox WHERE event_type = 'subscription_line_changed' AND created_at >= :since
          AND tenant_id = ANY(:ids)""")
    out = {}
    with stack.engine("marketplace").connect() as conn:
        for r in conn.execute(sql, {"since": since - dt.timedelta(seconds=1), "ids": list(set(tenant_ids))}):
            out.setdefault((r.tenant_id, r.sid, r.mpn), []).append((parse_ts(r.seen_at), r.quantity))
    for v in out.values():
        v.sort()
    return out


def desired_times(stack, psa, tenant_ids, since):
    """{(tenant, contract, service): [mapping outbox created_at, ...]} for <psa>_line_desired events."""
    sql = text("""
        SELECT tenant_id, payload->>'contract_id' AS contract_id, payload->>'service_id' AS service_id, created_at
        FROM outbox WHERE event_type = :etype AND created_at >= :since AND tenant_id = ANY(:ids)""")
    out = {}
    with stack.engine("mapping").connect() as conn:
        for r in conn.execute(sql, {"etype": f"{psa}_line_desired", "since": since, "ids": list(set(tenant_ids))}):
            out.setdefault((r.tenant_id, str(r.contract_id), str(r.service_id)), []).append(r.created_at)
    for v in out.values():
        v.sort()
    return out


def ledger_rows(stack, psa, tenant_ids, since):
    """{(tenant, contract, service): [row, ...]} of ledger rows created since ``since``."""
    sql = text("""
        SELECT tenant_id, contract_id, service_id, operation, state, quantity_before, quantity_after, unit_change,
               created_at, sent_at, posted_at
        FROM postings WHERE created_at >= :since AND tenant_id = ANY(:ids) ORDER BY id""")
    out = {}
    with stack.engine(psa).connect() as conn:
        for r in conn.execute(sql, {"since": since, "ids": list(set(tenant_ids))}):
            out.setdefault((r.tenant_id, r.contract_id, r.service_id), []).append(r)
    return out


def posted_count(stack, psa, groups, since):
    """How many of ``groups`` have a posted ledger row since ``since`` and nothing open after it."""
    ids = sorted({g[0] for g in groups})
    sql = text("""
        SELECT tenant_id, contract_id, service_id,
               count(*) FILTER (WHERE state = 'posted') AS posted,
               count(*) FILTER (WHERE state IN ('planned', 'posting', 'failed')) AS open
        FROM postings WHERE created_at >= :since AND tenant_id = ANY(:ids)
        GROUP BY tenant_id, contract_id, service_id""")
    wanted = set(groups)
    n = 0
    with stack.engine(psa).connect() as conn:
        for r in conn.execute(sql, {"since": since, "ids": ids}):
            if (r.tenant_id, r.contract_id, r.service_id) in wanted and r.posted and not r.open:
                n += 1
    return n


def wait_posted(stack, psa, targets, since, deadline, progress=None, interval=0.5):
    """Until every target's contract line shows a posted operation since ``since`` (or the deadline).
    Returns the UTC instant it saw them all (None at the deadline)."""
    groups = {tg.group for tg in targets}
    last = -1
    while time.time() < deadline:
        n = posted_count(stack, psa, groups, since)
        if progress and n != last:
            progress(n, len(groups))
            last = n
        if n >= len(groups):
            return utcnow()
        time.sleep(interval)
    return None


@dataclasses.dataclass(frozen=True)
class Injection:
    """One change as injected: the target's key and contract line, the quantity it was set to, when."""

    key: tuple
    group: tuple
    quantity: int
    at: dt.datetime


def injections(targets, at):
    return [Injection(tg.key, tg.group, tg.quantity, at) for tg in targets]


@dataclasses.dataclass
class Match:
    injection: Injection
    seen: dt.datetime | None
    desired: dt.datetime | None
    planned: dt.datetime | None
    sent: dt.datetime | None
    posted: dt.datetime | None
    ops: int
    right_change: bool     # the posted operations add up to the injected change


def match(stack, psa, injected, since, delta=1):
    """``injected``: [Injection]. Each with its seen event (the one carrying the injected quantity),
    the first desired event of its contract line after that, and the ledger rows of its contract
    line created after it was seen and before the same line's next injection was seen."""
    tenant_ids = sorted({i.key[0] for i in injected})
    seen = seen_times(stack, tenant_ids, since)
    desired = desired_times(stack, psa, tenant_ids, since)
    ledger = ledger_rows(stack, psa, tenant_ids, since)
    found = {}
    for inj in injected:
        found[inj] = next((ts for ts, q in seen.get(inj.key, []) if q == inj.quantity), None)
    following = {}
    by_key = {}
    for inj in sorted(injected, key=lambda i: i.at):
        by_key.setdefault(inj.key, []).append(inj)
    for chain in by_key.values():
        for a, b in zip(chain, chain[1:]):
            following[a] = found[b]
    out = []
    for inj in injected:
        s, until = found[inj], following.get(inj)

        def inside(ts):
            return (s is None or ts >= s) and (until is None or ts < until)

        d = next((ts for ts in desired.get(inj.group, []) if inside(ts)), None)
        rows = [r for r in ledger.get(inj.group, []) if inside(r.created_at)]
        posted = [r for r in rows if r.state == "posted"]
        change = 0
        for r in posted:
            if r.unit_change is not None:
                change += r.unit_change
            elif r.quantity_before is not None and r.quantity_after is not None:
                change += r.quantity_after - r.quantity_before
        out.append(Match(inj, s, d, min((r.created_at for r in rows), default=None),
                         min((r.sent_at for r in rows if r.sent_at), default=None),
                         max((r.posted_at for r in posted), default=None) if posted else None,
                         len(posted), change == delta))
    return out


def secs(a, b):
    return None if a is None or b is None else (b - a).total_seconds()


def figures(matches, injected_at, all_posted_at):
    """The run's figures from its matches."""
    done = [m for m in matches if m.seen and m.posted]
    lat = [secs(m.seen, m.posted) for m in done]
    first_seen = min((m.seen for m in matches if m.seen), default=None)
    last_seen = max((m.seen for m in matches if m.seen), default=None)
    last_posted = max((m.posted for m in done), default=None)
    span = secs(first_seen, last_posted)
    stage = {
        "seen_to_desired": summary([secs(m.seen, m.desired) for m in done if m.desired]),
        "desired_to_planned": summary([secs(m.desired, m.planned) for m in done if m.desired and m.planned]),
        "planned_to_sent": summary([secs(m.planned, m.sent) for m in done if m.planned and m.sent]),
        "sent_to_posted": summary([secs(m.sent, m.posted) for m in done if m.sent]),
    }
    return {
        "lines": len(matches), "posted": len(done),
        "not_seen": sum(1 for m in matches if m.seen is None),
        "not_posted": sum(1 for m in matches if m.seen and m.posted is None),
        "wrong_change": sum(1 for m in done if not m.right_change),
        "ops_per_line": (sum(m.ops for m in done) / len(done)) if done else None,
        "lines_per_second": (len(done) / span) if span else None,
        "latency": summary(lat),
        "detection_spread_seconds": secs(first_seen, last_seen),
        "first_seen_to_last_posted_seconds": span,
        "injection_to_all_posted_seconds": secs(injected_at, all_posted_at or last_posted),
        "stages": stage,
    }


def sim_counts(stack, sim, reset=False):
    r = requests.get(stack.url(sim, "/_sim/requests/count"), params={"reset": "1"} if reset else {}, timeout=60)
    r.raise_for_status()
    return r.json()


def sim_config(stack, sim, changes=None):
    if changes:
        r = requests.post(stack.url(sim, "/_sim/config"), json=changes, timeout=60)
    else:
        r = requests.get(stack.url(sim, "/_sim/config"), timeout=60)
    r.raise_for_status()
    return r.json()


def queue_depths(stack):
    """{queue: messages} of this stack's vhost from the RabbitMQ management API (empty if unreachable)."""
    from urllib.parse import quote

    try:
        port = 15673
        vhost = stack.env["IDSYNC_AMQP_VHOST"]
        r = requests.get(f"http://127.0.0.1:{port}/api/queues/{quote(vhost, safe='')}",
                         auth=(stack.env.get("IDSYNC_AMQP_USER", "idsync"), stack.env.get("IDSYNC_AMQP_PASSWORD", "")),
                         params={"columns": "name,messages"}, timeout=5)
        r.raise_for_status()
        return {q["name"]: q.get("messages", 0) for q in r.json() if q.get("messages")}
    except Exception:  # noqa: BLE001 - diagnostics only
        return {}


def load_average():
    try:
        return [float(x) for x in open("/proc/loadavg").read().split()[:3]]
    except OSError:
        return None


# --- CPU time of the stack's processes ---------------------------------------------------------
_TICK = None


def _cpu_of(pid):
    global _TICK
    import os

    if _TICK is None:
        _TICK = os.sysconf("SC_CLK_TCK")
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK   # utime + stime


def stack_cpu(stack):
    """{process: CPU seconds so far} for the stack's own processes (.run/<name>/pids) and, as
    "postgres", the PostgreSQL backends serving its database (their process titles name it).
    RabbitMQ serves every stack from one process and is left out."""
    import os
    from common.secrets import ROOT

    out = {}
    pids = ROOT / ".run" / stack.name / "pids"
    for f in sorted(pids.glob("*.pid")) if pids.exists() else []:
        try:
            cpu = _cpu_of(int(f.read_text().strip()))
        except ValueError:
            cpu = None
        if cpu is not None:
            out[f.stem] = cpu
    db = stack.env["IDSYNC_DB_NAME"]
    backends = {}
    for pid in os.listdir("/proc"):
        if not pid.isdigit():
            continue
        try:
            title = open(f"/proc/{pid}/cmdline", "rb").read().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if title.startswith("postgres: ") and f" {db} " in title:
            cpu = _cpu_of(pid)
            if cpu is not None:
                backends[int(pid)] = cpu
    out["postgres"] = backends
    return out


def cpu_delta(before, after):
    """{process: CPU seconds used between two stack_cpu() samples} (backends that appeared in
    between count from zero)."""
    out = {}
    for name, value in after.items():
        if name == "postgres":
            old = before.get("postgres", {})
            out[name] = sum(v - old.get(pid, 0.0) for pid, v in value.items())
        elif name in before:
            out[name] = value - before[name]
    return {k: round(v, 2) for k, v in sorted(out.items(), key=lambda kv: -kv[1])}
