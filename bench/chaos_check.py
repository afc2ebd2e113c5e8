"""The invariants a chaos run must end with, and the readings behind them (docs/chaos.md).

The oracle is the marketplace simulator, not the product: the final quantity and status of every
subscription line there, mapped through the tenant's (person-made) mapping - customer -> company,
MPN -> service, line -> contract - and summed per contract line (status active/pending count, hold,
terminated and removed count 0) is what the customer must be billed. The PSA simulators' state is
compared with it at the horizon (once every pending breakpoint is in force: decreases take effect
from the next period), and the posting service's own schedule is compared with the PSA for today.

1. every PSA contract line == its desired state (marketplace oracle at the horizon; the posting
   schedule today);
2. no vendor write applied twice: the simulators' write logs == the ledgers' posted operations
   (each posted ledger row applied exactly once, nothing applied that the ledger does not hold);
3. no change lost: every line the run changed is reflected in the mapping service's copy and in a
   correct contract line; every event published (outboxes) reached reporting's journal;
4. every dead letter accounted for (listed, explained, replayed) and nothing left in any queue.

Between stages a mismatch is located: marketplace service snapshot -> mapping copy -> mapping
desired state -> posting schedule -> PSA, so a report says where a change was lost.
"""
import collections
import datetime as dt
import re

import requests
from sqlalchemy import func, select

COUNTING = ("active", "pending")
OPEN_STATES = ("planned", "posting", "failed")
OUTBOX_SERVICES = ("marketplace", "mapping", "autotask", "connectwise")
HANDLER_SERVICES = ("mapping", "autotask", "connectwise", "reporting")


def today():
    return dt.datetime.now(dt.timezone.utc).date()


def counted(quantity, status):
    return int(quantity) if status in COUNTING else 0


# --- readings -------------------------------------------------------------------------------------
def market_truth(tenant):
    """{(subscription_id, mpn): (quantity, status, customer_id)} from the marketplace simulator."""
    return {(sid, mpn): (qty, status, customer) for sid, mpn, qty, status, customer in tenant.lines()}


def mapping_view(stack, tenant_ids):
    """The mapping service's tables for these tenants (read-only, straight from its schema)."""
    from services.mapping import models as mm
    from services.mapping.planner import build_schedule

    out = {t: {"customers": {}, "products": {}, "links": {}, "lines": {}, "desired": {}} for t in tenant_ids}
    with stack.engine("mapping").connect() as conn:
        for r in conn.execute(select(mm.customer_mappings).where(mm.customer_mappings.c.tenant_id.in_(tenant_ids))):
            out[r.tenant_id]["customers"][r.customer_id] = (r.status, r.psa_company_id)
        for r in conn.execute(select(mm.product_mappings).where(mm.product_mappings.c.tenant_id.in_(tenant_ids))):
            out[r.tenant_id]["products"][r.mpn] = (r.status, r.psa_service_id)
        for r in conn.execute(select(mm.line_links).where(mm.line_links.c.tenant_id.in_(tenant_ids))):
            out[r.tenant_id]["links"][(r.subscription_id, r.mpn)] = (r.status, r.psa_contract_id)
        for r in conn.execute(select(mm.lines).where(mm.lines.c.tenant_id.in_(tenant_ids))):
            out[r.tenant_id]["lines"][(r.subscription_id, r.mpn)] = (r.quantity, r.status)
        for r in conn.execute(select(mm.desired_lines).where(mm.desired_lines.c.tenant_id.in_(tenant_ids))):
            schedule = build_schedule(r.origin, r.timeline)
            out[r.tenant_id]["desired"][(r.psa_contract_id, r.psa_service_id)] = {
                "final": int(schedule[-1]["quantity"]) if schedule else None, "version": r.version,
                "status": r.status, "emitted": r.emitted_at is not None}
    return out


def marketplace_copy(stack, tenant_ids):
    """The marketplace service's snapshot of the lines: {tenant: {(sid, mpn): (quantity, status)}}."""
    from services.marketplace import models as mk

    t = mk.subscription_lines
    out = {tid: {} for tid in tenant_ids}
    with stack.engine("marketplace").connect() as conn:
        for r in conn.execute(select(t.c.tenant_id, t.c.subscription_id, t.c.mpn, t.c.quantity, t.c.status)
                              .where(t.c.tenant_id.in_(tenant_ids))):
            out[r.tenant_id][(r.subscription_id, r.mpn)] = (r.quantity, r.status)
    return out


def posting_tables(psa):
    if psa == "autotask":
        from services.autotask import models
    else:
        from services.connectwise import models
    return models.posting


def posting_view(stack, psa, tenant_ids):
    """Posting groups and ledger rows of these tenants in the PSA service's schema."""
    pt = posting_tables(psa)
    groups, ledger = {}, collections.defaultdict(list)
    with stack.engine(psa).connect() as conn:
        for r in conn.execute(select(pt.groups).where(pt.groups.c.tenant_id.in_(tenant_ids))):
            groups[(r.tenant_id, r.contract_id, r.service_id)] = dict(r._mapping)
        for r in conn.execute(select(pt.ledger).where(pt.ledger.c.tenant_id.in_(tenant_ids)).order_by(pt.ledger.c.id)):
            ledger[r.tenant_id].append(dict(r._mapping))
    return groups, ledger


def psa_state(stack, tenant):
    if tenant.psa == "autotask":
        r = requests.get(stack.url("sim-autotask", "/_sim/state"), params={"database": tenant.psa_database, "units": 1},
                         timeout=60)
        r.raise_for_status()
        return r.json()["databases"][0]
    r = requests.get(stack.url("sim-connectwise", "/_sim/state"), params={"full": 1, "company_id": tenant.psa_database},
                     timeout=60)
    r.raise_for_status()
    return r.json()["tenants"][0]


def psa_lines(tenant, state, day=None):
    """{(contract_id, service_id): {"horizon": units, "today": units}} as strings, like the mapping's ids."""
    day = day or today()
    out = {}
    if tenant.psa == "autotask":
        by_cs = {cs["id"]: (str(cs["contractID"]), str(cs["serviceID"])) for cs in state["contract_services"]}
        total = collections.Counter()
        for a in state["adjustments"]:
            total[a["contractServiceID"]] += int(a["unitChange"])
        for cs_id, key in by_cs.items():
            out[key] = {"horizon": total[cs_id], "today": int(state["units_today"].get(str(cs_id), 0))}
        return out
    far = (day + dt.timedelta(days=400)).isoformat()
    now = day.isoformat()

    def on(a, iso):
        return a["effectiveDate"][:10] <= iso and (a["cancelledDate"] is None or a["cancelledDate"][:10] > iso)
    for a in state["addition"]:
        key = (str(a["agreementId"]), str(a["product"]["id"]))
        line = out.setdefault(key, {"horizon": 0, "today": 0})
        line["horizon"] += int(a["quantity"]) if on(a, far) else 0
        line["today"] += int(a["quantity"]) if on(a, now) else 0
    return out


def psa_contracts(tenant, state):
    if tenant.psa == "autotask":
        return {str(c["id"]) for c in state["contracts"]}
    return {str(a["id"]) for a in state["agreement"]}


# --- the oracle -----------------------------------------------------------------------------------
def expected(truth, mapping):
    """({(contract, service): quantity}, {(sid, mpn): (contract, service) | reason}) from the
    marketplace's final state through the tenant's mapping."""
    want = collections.Counter()
    route = {}
    for (sid, mpn), (qty, status, customer) in truth.items():
        c_status, company = mapping["customers"].get(customer, (None, None))
        p_status, service = mapping["products"].get(mpn, (None, None))
        l_status, contract = mapping["links"].get((sid, mpn), (None, None))
        if (sid, mpn) not in mapping["lines"]:
            route[(sid, mpn)] = "unknown to mapping"
        elif not (c_status == "mapped" and company and p_status == "mapped" and service
                  and l_status == "mapped" and contract):
            route[(sid, mpn)] = f"not billable (customer {c_status}, product {p_status}, link {l_status})"
        else:
            route[(sid, mpn)] = (contract, service)
            want[(contract, service)] += counted(qty, status)
    return want, route


def check_tenant(stack, tenant, mapping, mcopy, groups, ledger, touched):
    """Invariants 1 and 3 for one tenant -> dict of findings (empty lists = fine)."""
    truth = market_truth(tenant)
    state = psa_state(stack, tenant)
    psa = psa_lines(tenant, state)
    want, route = expected(truth, mapping)
    contracts = psa_contracts(tenant, state)
    wrong, schedule_wrong, desired_wrong = [], [], []
    for key in sorted(set(want) | {k for k in psa if k[0] in contracts}):
        have = psa.get(key, {"horizon": 0, "today": 0})
        if have["horizon"] != want.get(key, 0):
            wrong.append(locate(key, want.get(key, 0), have, truth, route, mapping, mcopy, groups, tenant))
    for (tid, contract, service), g in groups.items():
        if tid != tenant.tenant_id:
            continue
        bp = _desired_at(g["desired"], today())
        have = psa.get((contract, service), {"today": 0})["today"]
        if bp is not None and int(bp["quantity"]) != have:
            schedule_wrong.append({"line": f"{contract}/{service}", "schedule_today": bp["quantity"], "psa_today": have,
                                   "status": g["status"], "message": g["status_message"]})
    for key in sorted(want):
        d = mapping["desired"].get(key)
        g = groups.get((tenant.tenant_id, *key))
        final = _final(g["desired"]) if g else None
        if ((d or {}).get("final") or 0) != want[key] or (final or 0) != want[key]:
            desired_wrong.append({"line": "/".join(key), "expected": want[key],
                                  "mapping_schedule_final": None if d is None else d["final"],
                                  "posting_schedule_final": final,
                                  "mapping_status": None if d is None else d["status"]})
    lost = []
    for (tid, sid, mpn) in touched:
        if tid != tenant.tenant_id:
            continue
        r = route.get((sid, mpn))
        qty, status, _ = truth[(sid, mpn)]
        copy = mapping["lines"].get((sid, mpn))
        if not isinstance(r, tuple):
            lost.append({"line": f"{sid}/{mpn}", "why": r or "gone from the marketplace"})
        elif copy is None or (int(copy[0]), copy[1]) != (qty, status):
            lost.append({"line": f"{sid}/{mpn}", "why": f"mapping has {copy}, marketplace ({qty}, {status})"})
        elif psa.get(r, {"horizon": 0})["horizon"] != want.get(r, 0):
            lost.append({"line": f"{sid}/{mpn}", "why": f"contract line {'/'.join(r)} wrong in the PSA"})
    rows = ledger.get(tenant.tenant_id, [])
    states = collections.Counter(r["state"] for r in rows)
    not_billable = [f"{k[0]}/{k[1]}: {v}" for k, v in route.items() if not isinstance(v, tuple)
                    and counted(*truth[k][:2]) > 0]
    return {"tenant": tenant.slug, "psa": tenant.psa, "lines": len(truth), "contract_lines": len(want),
            "units": sum(want.values()), "wrong": wrong, "schedule_wrong": schedule_wrong,
            "desired_wrong": desired_wrong, "lost": lost, "not_billable": not_billable,
            "ledger": dict(states), "held": states.get("held", 0), "open": sum(states.get(s, 0) for s in OPEN_STATES),
            "dead": states.get("dead", 0), "state": state}


def _final(breakpoints):
    ordered = sorted(breakpoints or [], key=lambda b: b["date"])
    return int(ordered[-1]["quantity"]) if ordered else None


def _desired_at(breakpoints, day):
    iso = day.isoformat()
    found = None
    for b in sorted(breakpoints or [], key=lambda b: b["date"]):
        if b["date"] <= iso:
            found = b
    return found


def locate(key, want, have, truth, route, mapping, mcopy, groups, tenant):
    """Where the pipeline diverged for one contract line."""
    contract, service = key
    members = [k for k, r in route.items() if r == key]
    stale_market = [f"{s}/{m}" for s, m in members if mcopy.get((s, m)) is None
                    or (int(mcopy[(s, m)][0]), mcopy[(s, m)][1]) != truth[(s, m)][:2]]
    stale_mapping = [f"{s}/{m}" for s, m in members if mapping["lines"].get((s, m)) is None
                     or (int(mapping["lines"][(s, m)][0]), mapping["lines"][(s, m)][1]) != truth[(s, m)][:2]]
    desired = mapping["desired"].get(key)
    group = groups.get((tenant.tenant_id, contract, service))
    final = _final(group["desired"]) if group else None
    if stale_market:
        stage = "marketplace sync (its snapshot differs from the marketplace)"
    elif stale_mapping:
        stage = "marketplace -> mapping (subscription_line_changed)"
    elif desired is None or (desired["final"] or 0) != want:
        stage = "mapping desired state"
    elif group is None or (final or 0) != want or group["desired_version"] != desired["version"]:
        stage = "mapping -> PSA service (line_desired)"
    else:
        stage = "posting to the PSA"
    return {"line": f"{contract}/{service}", "expected": want, "psa_horizon": have["horizon"], "psa_today": have["today"],
            "stage": stage, "members": len(members), "stale_marketplace_copy": stale_market[:5],
            "stale_mapping_copy": stale_mapping[:5],
            "mapping_desired": None if desired is None else {k: desired[k] for k in ("final", "version", "status")},
            "posting_group": None if group is None else {
                "final": final, "desired_version": group["desired_version"],
                "status": group["status"], "message": group["status_message"], "due": group["due_at"] is not None}}


# --- invariant 2: the write logs against the ledgers ----------------------------------------------
def writes(stack, sim):
    r = requests.get(stack.url(sim, "/_sim/writes"), timeout=60)
    r.raise_for_status()
    return r.json()


def _low(body):
    return {str(k).lower(): v for k, v in (body or {}).items()} if isinstance(body, dict) else {}


def autotask_applied(state, log):
    """The write log of one Autotask database as (op, contract, service, value, date) tuples."""
    contracts = {c["id"] for c in state["contracts"]}
    cs = {c["id"]: (c["contractID"], c["serviceID"]) for c in state["contract_services"]}
    out = collections.Counter()
    for w in log:
        body = _low(w["body"])
        m = re.search(r"/Contracts/(\d+)/", w["path"])
        contract = body.get("contractid") or (int(m.group(1)) if m else None)
        if w["path"].endswith("ContractServiceAdjustments") or w["path"].endswith("/ServiceAdjustments"):
            if contract not in contracts:
                continue
            service = body.get("serviceid") or cs.get(body.get("contractserviceid"), (None, None))[1]
            out[("adjust", contract, service, body["unitchange"], str(body["effectivedate"])[:10])] += 1
        elif w["path"].endswith("/Services") and w["method"] == "POST" and contract in contracts:
            out[("add_service", contract, body["serviceid"], None, None)] += 1
        elif w["path"].endswith("/Services") and w["method"] == "PATCH" and body.get("id") in cs:
            c, s = cs[body["id"]]
            if "adjustedprice" in body:
                out[("price", c, s, format(float(body["adjustedprice"]), ".2f"), None)] += 1
    return out


def autotask_posted(rows, state="posted"):
    out = collections.Counter()
    for r in rows:
        if r["state"] != state:
            continue
        c, s = int(r["contract_id"]), int(r["service_id"])
        if r["operation"] == "adjust":
            out[("adjust", c, s, r["unit_change"], r["effective_date"].isoformat())] += 1
        elif r["operation"] == "add_service":
            out[("add_service", c, s, None, None)] += 1
        else:
            out[("price", c, s, format(float(r["unit_price"]), ".2f"), None)] += 1
    return out


def _date(value):
    return None if value is None else str(value)[:10]


def connectwise_applied(log, agreements, companies=None):
    """The write log for these agreement ids of these companies (None: any) as (op, agreement,
    target, value) tuples. Every company set numbers its agreements alike, so a write for another
    company's agreement 1004 - e.g. the previous run's backlog posted once its services came back
    (seed 3012) - is told apart by the write log's tenant."""
    wanted = None if companies is None else {str(c).casefold() for c in companies}
    out = collections.Counter()
    for w in log:
        m = re.search(r"/finance/agreements/(\d+)/additions", w["path"])
        if not m or int(m.group(1)) not in agreements or w["method"] == "GET":
            continue
        if wanted is not None and w.get("tenant") is not None and str(w["tenant"]).casefold() not in wanted:
            continue
        agreement = int(m.group(1))
        if w["method"] == "POST":
            b = w["body"]
            out[("add_addition", agreement, int(b["product"]["id"]),
                 (int(b["quantity"]), _date(b["effectiveDate"]), _date(b.get("cancelledDate"))))] += 1
            continue
        addition = int(w["path"].rstrip("/").rsplit("/", 1)[1])
        for op in w["body"] if isinstance(w["body"], list) else []:
            path = op["path"].lstrip("/")
            if path == "quantity":
                out[("quantity", agreement, addition, int(op["value"]))] += 1
            elif path == "cancelledDate":
                out[("cancel", agreement, addition, _date(op["value"]))] += 1
            elif path == "unitPrice":
                out[("price", agreement, addition, format(float(op["value"]), ".2f"))] += 1
    return out


def connectwise_posted(rows, state="posted"):
    out = collections.Counter()
    for r in rows:
        if r["state"] != state:
            continue
        p, agreement = r["params"] or {}, int(r["contract_id"])
        if r["operation"] == "add_addition":
            out[("add_addition", agreement, int(r["service_id"]),
                 (int(p["quantity"]), r["effective_date"].isoformat(), p.get("cancelled_date")))] += 1
        elif r["operation"] == "quantity":
            out[("quantity", agreement, int(p["addition_id"]), int(p["quantity"]))] += 1
        elif r["operation"] == "cancel":
            out[("cancel", agreement, int(p["addition_id"]), p.get("cancelled_date"))] += 1
        elif r["operation"] == "price":
            out[("price", agreement, int(p["addition_id"]), format(float(r["unit_price"]), ".2f"))] += 1
    return out


def applied_once(stack, tenants, results, ledger):
    """Invariant 2 per tenant (Autotask: each database has its own ids) and over all ConnectWise
    tenants of the run together (company sets share id ranges; the write log's tenant keeps other
    companies' writes out)."""
    out = []
    at_log = writes(stack, "sim-autotask") if any(t.psa == "autotask" for t in tenants) else []
    cw_log = writes(stack, "sim-connectwise") if any(t.psa == "connectwise" for t in tenants) else []
    cw_posted, cw_unknown, cw_names, cw_agreements = collections.Counter(), collections.Counter(), [], set()
    cw_companies = set()
    for t in tenants:
        state = results[t.tenant_id]["state"]
        rows = ledger.get(t.tenant_id, [])
        if t.psa == "autotask":
            out.append(_compare(t.slug, autotask_applied(state, at_log), autotask_posted(rows),
                                autotask_posted(rows, "posting")))
        else:
            cw_agreements |= {a["id"] for a in state["agreement"]}
            cw_companies.add(t.psa_database)
            cw_posted += connectwise_posted(rows)
            cw_unknown += connectwise_posted(rows, "posting")
            cw_names.append(t.slug)
    if cw_names:
        # every CW company set numbers its agreements alike: this run's CW tenants together (the
        # write log is cleared when a run begins)
        out.append(_compare("+".join(cw_names), connectwise_applied(cw_log, cw_agreements, cw_companies),
                            cw_posted, cw_unknown))
    return out


def _compare(name, applied, posted, unknown):
    """``unknown``: ledger rows still in ``posting`` (sent, outcome not settled yet) may or may not
    be in the write log; a converged run has none."""
    doubled = applied - posted - unknown   # applied more often than the ledger could have sent them
    phantom = posted - applied             # the ledger says posted, the vendor never got it
    return {"tenants": name, "applied": sum(applied.values()), "posted": sum(posted.values()),
            "unsettled": sum(unknown.values()), "doubled": sum(doubled.values()), "phantom": sum(phantom.values()),
            "doubled_ops": [str(k) for k in doubled][:10], "phantom_ops": [str(k) for k in phantom][:10]}


# --- invariant 3b: every published event reached reporting --------------------------------------
def journal_gaps(stack, tenant_ids):
    """Sent outbox events of these tenants that reporting's journal does not hold, by source."""
    from services.reporting import models as rm

    gaps = {}
    with stack.engine("reporting").connect() as conn:
        journal = {r.event_id for r in conn.execute(select(rm.event_journal.c.event_id)
                                                    .where(rm.event_journal.c.tenant_id.in_(tenant_ids)))}
    unsent = {}
    for service in OUTBOX_SERVICES:
        models = __import__(f"services.{service}.models", fromlist=["outbox"])
        ob = models.outbox
        with stack.engine(service).connect() as conn:
            rows = conn.execute(select(ob.c.event_id, ob.c.event_type, ob.c.sent_at)
                                .where(ob.c.tenant_id.in_(tenant_ids))).all()
        missing = [r for r in rows if r.sent_at is not None and r.event_id not in journal]
        if missing:
            gaps[service] = collections.Counter(r.event_type for r in missing)
        pending = sum(1 for r in rows if r.sent_at is None)
        if pending:
            unsent[service] = pending
    return gaps, unsent


def outbox_pending(stack):
    """Unsent outbox rows per service (every tenant)."""
    out = {}
    for service in OUTBOX_SERVICES:
        models = __import__(f"services.{service}.models", fromlist=["outbox"])
        with stack.engine(service).connect() as conn:
            n = conn.execute(select(func.count()).select_from(models.outbox)
                             .where(models.outbox.c.sent_at.is_(None))).scalar_one()
        if n:
            out[service] = n
    return out


# --- invariant 4: queues and dead letters ---------------------------------------------------------
def queue_depths(stack):
    """{queue: messages} of the run's vhost from the management API (every queue with a message)."""
    port = int(stack.env["IDSYNC_MGMT_PORT"])
    vhost = stack.env["IDSYNC_AMQP_VHOST"]
    r = requests.get(f"http://127.0.0.1:{port}/api/queues/{vhost}", timeout=20,
                     auth=("idsync", stack.env["IDSYNC_AMQP_PASSWORD"]),
                     params={"columns": "name,messages,messages_ready,messages_unacknowledged"})
    r.raise_for_status()
    # event queues, their wait queues and dead letters; RPC request/reply queues are transient
    return {q["name"]: q.get("messages", 0) or 0 for q in r.json()
            if q.get("messages") and not q["name"].startswith("rpc")}


EXPLANATIONS = (   # (error pattern, why, the timeline entries that make it so)
    (r"OperationalError|psycopg2|could not connect to server|server closed the connection|"
     r"terminating connection|connection to server|Connection refused.*543|the database system is",
     "PostgreSQL outage outlasted the handler's retry ladder", "PostgreSQL"),
    (r"AMQP|ConnectionForced|RecoverableConnectionError|amqp|Broker|ChannelError",
     "RabbitMQ outage while the handler published", "RabbitMQ"),
    (r"UnknownService|RpcTimeout|RemoteError.*Unavailable|VendorUnavailable",
     "a service it calls was down (killed by the run)", "SIGKILL"),
)


def explain(dead, timeline):
    """Why one dead letter is there, from its error and the run's timeline (None = unexplained)."""
    error = dead.get("error") or ""
    for pattern, why, marker in EXPLANATIONS:
        if re.search(pattern, error):
            seen = [f"t+{t}s {text}" for t, text in timeline if marker in text]
            return f"{why} ({'; '.join(seen[:3]) or 'no such outage recorded'})"
    return None
