"""Economy benchmark (issue 7): vendor calls per changed line.

    python -m bench.economy [--quick] [--psa autotask|connectwise|both] [--full-sizes 10000,50000]

Counts come from the simulators (`GET /_sim/requests/count`: every vendor request, by route;
`GET /_sim/writes`: every accepted write), reset before each measured step. Per PSA, on a fresh
stack (BenchStack "bench_pipe", ports +3000):

1. Steady state: a few tenants mapped and posted (day one), then 1,000 changed lines (quantity +1,
   each the only changed line of its PSA contract line) and one sync per tenant; counted from the
   injection until every change is posted. Figures: PSA reads and writes per changed line, lines
   (contract lines) per PSA read call.
2. First full reconciliation: one tenant with N lines (10,000 and 50,000; --quick 1,000) whose PSA
   holds its customers, contracts and services but none of these lines: day one (full sync,
   references, accept all) counted from the start until every line is in sync. PSA reads are split
   into reference reads (the mapping screens' companies/contracts/services) and posting reads.
3. Marketplace calls per incremental sync (list pages, detail GETs, token) with no change and
   with k changes.

Vendor limits: the PSA simulators' per-database limits (Autotask 10,000 requests/hour, ConnectWise
1,000/minute) and the product's budget share (40 %) would stretch a first reconciliation over hours;
for step 2 both are raised (simulator config and IDSYNC_*_HOURLY_LIMIT / REQUESTS_PER_WINDOW) and
the notes give how long the counted calls take at the real limits. The marketplace simulator's
60 GETs/min is raised likewise (a first sync of 50,000 lines is ~20,000 detail GETs: 5.5 hours).
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import traceback

import requests

from bench import flow
from bench.harness import BenchStack, Deadline, alarm as _alarm, log
from bench.results import carried_label, carried_notes, carry_over, write

# the vendors' limits raised for the first-reconciliation runs (said in the notes)
RAISED = {
    "IDSYNC_AUTOTASK_HOURLY_LIMIT": "10000000",
    "IDSYNC_CONNECTWISE_REQUESTS_PER_WINDOW": "10000000",
    "IDSYNC_SYNC_POLL_SECONDS": "0.2",
    # scheduled syncs would add marketplace calls to the counts: only the bench's own syncs run
    "IDSYNC_SYNC_INTERVAL_MINUTES": "100000",
    # the lazy reference re-read every hour would add PSA reads to the counts
    "IDSYNC_REFERENCE_REFRESH_MINUTES": "100000",
}
REAL_LIMITS = {"autotask": ("10,000 requests/hour per database, 40 % of it for the product", 4000.0 / 3600),
               "connectwise": ("~1,000 requests/minute per company, 40 % of it for the product", 400.0 / 60)}
SIM = {"autotask": "sim-autotask", "connectwise": "sim-connectwise"}
TARGET_WRITES, TARGET_READ = 1.05, 200




def writes_since(stack, sim, since_seq):
    r = requests.get(stack.url(sim, "/_sim/writes"), params={"since": since_seq}, timeout=120)
    r.raise_for_status()
    return r.json()


def last_write_seq(stack, sim):
    log_ = writes_since(stack, sim, 0)
    return max((w["seq"] for w in log_), default=0)


def raise_psa_limits(stack, psa):
    if psa == "autotask":
        flow.sim_config(stack, "sim-autotask", {"hourly_limit": 10_000_000})
    else:
        flow.sim_config(stack, "sim-connectwise", {"rate_limit_per_minute": 10_000_000})


def split(counts, psa):
    """(reads, writes, reference reads, {route: n}) of a /_sim/requests/count answer. Autotask's POSTed
    queries are reads; a reference read is one of Companies/Contracts/Services (ConnectWise:
    company/companies, finance/agreements, procurement/catalog lists)."""
    reads = writes = refs = 0
    routes = {}
    for key, n in counts["by_endpoint"].items():
        method, _, path = key.partition(" ")
        low = path.lower()
        is_query = low.endswith("/query") or "/query/" in low or low.endswith("/count")
        if method == "GET" or is_query:
            if "zoneinformation" in low or "companyinfo" in low or "thresholdinformation" in low:
                kind = "discovery"
            elif psa == "autotask" and any(f"/v1.0/{e}/" in low + "/" for e in ("companies", "contracts", "services")):
                kind = "reference"
            elif psa == "connectwise" and "/additions" not in low and any(
                    e in low for e in ("company/companies", "finance/agreements", "procurement/catalog")):
                kind = "reference"
            else:
                kind = "read"
            if kind == "reference":
                refs += n
            elif kind == "read":
                reads += n
        else:
            kind = "write"
            writes += n
        route = _route(method, path)
        routes[f"{kind} {route}"] = routes.get(f"{kind} {route}", 0) + n
    return reads, writes, refs, routes


def _route(method, path):
    parts = ["{id}" if p.isdigit() else p for p in path.split("?")[0].split("/")]
    return f"{method} {'/'.join(parts)}"


def marketplace_routes(counts):
    out = {}
    for key, n in counts["by_endpoint"].items():
        method, _, path = key.partition(" ")
        tail = path.split("/marketplace/", 1)[-1]
        tail = "/".join(p if i < 2 else "{id}" for i, p in enumerate(tail.split("/")))
        parts = tail.split("/")
        if len(parts) >= 3:
            tail = f"{parts[1]}/{{id}}"
        elif len(parts) == 2:
            tail = parts[1]
        out[f"{method} {tail}"] = out.get(f"{method} {tail}", 0) + n
    return out


# --- steps -----------------------------------------------------------------------------------------
def steady(stack, rpc, psa, made, n, deadline):
    pool = flow.candidates(stack, made)
    targets = flow.spread(pool, n)
    sim = SIM[psa]
    flow.sim_counts(stack, sim, reset=True)
    flow.sim_counts(stack, "sim-marketplace", reset=True)
    seq = last_write_seq(stack, sim)
    at = flow.inject(stack, targets)
    flow.trigger_syncs(rpc, [t.tenant_id for t in made])
    done = flow.wait_posted(stack, psa, targets, at, deadline)
    time.sleep(2.0)
    counts = flow.sim_counts(stack, sim)
    market = flow.sim_counts(stack, "sim-marketplace")
    reads, writes, refs, routes = split(counts, psa)
    logged = [w for w in writes_since(stack, sim, seq) if w["status"] < 400]
    matches = flow.match(stack, psa, flow.injections(targets, at), at)
    batches = batch_sizes(stack, psa, [t.tenant_id for t in made], at)
    fig = {"psa": psa, "step": "steady", "changed_lines": len(targets), "tenants": len(made),
           "posted": sum(1 for m in matches if m.posted), "timed_out": done is None,
           "psa_reads": reads, "psa_writes": writes, "psa_reference_reads": refs, "write_log": len(logged),
           "writes_per_line": writes / len(targets) if targets else None,
           "lines_per_read": len(targets) / reads if reads else None,
           "reads_per_line": reads / len(targets) if targets else None,
           "posting_batches": batches, "routes": routes, "marketplace_routes": marketplace_routes(market),
           "marketplace_calls": market["total"]}
    log(f"{psa} steady {len(targets)}: {reads} reads, {writes} writes ({fig['writes_per_line']:.3f}/line), "
        f"{fig['lines_per_read'] and round(fig['lines_per_read'], 1)} lines/read; batches {batches}")
    return fig


def batch_sizes(stack, psa, tenant_ids, since):
    """Sizes of the posting batches: ledger rows created in the same second per tenant (an estimate:
    one batch plans its lines within a second or two)."""
    from sqlalchemy import text

    sql = text("""SELECT tenant_id, date_trunc('second', created_at) AS s, count(DISTINCT (contract_id, service_id)) AS n
                  FROM postings WHERE created_at >= :since AND tenant_id = ANY(:ids) GROUP BY 1, 2 ORDER BY 2""")
    with stack.engine(psa).connect() as conn:
        rows = conn.execute(sql, {"since": since, "ids": tenant_ids}).all()
    sizes = [r.n for r in rows]
    return {"seconds_with_plans": len(sizes), "max_lines_in_a_second": max(sizes, default=0)}


def first_reconciliation(stack, psa, lines, deadline, seed):
    from bench import tenants as bench_tenants

    sim = SIM[psa]
    customers = max(5, lines // 10)
    made = bench_tenants.provision(stack, 1, psa=psa, customers=customers, lines_per_tenant=lines,
                                   seed=seed, prefix=f"{psa[:2]}full{lines}")
    total_lines = len(made[0].lines())
    flow.sim_counts(stack, sim, reset=True)
    flow.sim_counts(stack, "sim-marketplace", reset=True)
    seq = last_write_seq(stack, sim)
    t0 = time.time()
    complete = True
    try:
        bench_tenants.map_all(stack, made, timeout=max(60, deadline - time.time()))
    except TimeoutError as exc:
        # the budget ran out: the calls so far still give the cost per contract line posted so far
        complete = False
        log(f"{psa} first {lines}: {exc}; reporting the part done")
    took = time.time() - t0
    time.sleep(2.0)
    counts = flow.sim_counts(stack, sim)
    market = flow.sim_counts(stack, "sim-marketplace")
    reads, writes, refs, routes = split(counts, psa)
    logged = [w for w in writes_since(stack, sim, seq) if w["status"] < 400]
    groups, billable = posted_groups(stack, psa, made[0].tenant_id), billable_lines(stack, made[0].tenant_id)
    limit_text, per_second = REAL_LIMITS[psa]
    calls = reads + writes + refs
    fig = {"psa": psa, "step": "first", "complete": complete, "lines": total_lines, "billable_lines": billable,
           "customers": customers, "contract_lines": groups, "seconds": round(took, 1), "psa_reads": reads, "psa_writes": writes,
           "psa_reference_reads": refs, "write_log": len(logged),
           "writes_per_line": writes / billable if billable else None,
           "writes_per_contract_line": writes / groups if groups else None,
           "lines_per_read": billable / reads if reads else None,
           "contract_lines_per_read": groups / reads if reads else None,
           "hours_at_real_limit": calls / per_second / 3600, "routes": routes,
           "marketplace_routes": marketplace_routes(market), "marketplace_calls": market["total"]}
    log(f"{psa} first {total_lines}: {reads} reads + {refs} reference reads, {writes} writes "
        f"({groups} contract lines) in {took:.0f}s")
    return fig


def posted_groups(stack, psa, tenant_id):
    from sqlalchemy import text

    with stack.engine(psa).connect() as conn:
        return conn.execute(text("SELECT count(*) FROM posting_groups WHERE tenant_id = :t AND status = 'in_sync'"),
                            {"t": tenant_id}).scalar()


def billable_lines(stack, tenant_id):
    """Subscription lines of the tenant whose customer, product and link are mapped and that bill
    (active or pending): the lines the first reconciliation has to put in the PSA."""
    from sqlalchemy import text

    sql = text("""
        SELECT count(*) FROM lines l
        JOIN line_links k ON k.tenant_id = l.tenant_id AND k.subscription_id = l.subscription_id AND k.mpn = l.mpn
        JOIN product_mappings pm ON pm.tenant_id = l.tenant_id AND pm.mpn = l.mpn
        JOIN customer_mappings cm ON cm.tenant_id = l.tenant_id AND cm.customer_id = l.customer_id
        WHERE l.tenant_id = :t AND l.status IN ('active', 'pending') AND l.quantity > 0 AND k.status = 'mapped'
          AND pm.status = 'mapped' AND cm.status = 'mapped'""")
    with stack.engine("mapping").connect() as conn:
        return conn.execute(sql, {"t": tenant_id}).scalar()


def marketplace_syncs(stack, rpc, tenant, ks):
    """Calls of one incremental sync of ``tenant`` with no change and with k changed subscriptions."""
    out = []
    pool = flow.candidates(stack, [tenant])[tenant.tenant_id]
    subs_total = len({line[0] for line in tenant.lines()})
    by_subscription = {}
    for tg in pool:   # one line per subscription: k changed lines are k changed subscriptions
        by_subscription.setdefault(tg.subscription_id, tg)
    distinct = list(by_subscription.values())
    offset = 0
    for k in [0] + list(ks):
        # subscriptions not changed in an earlier step, a second later: lastModifiedDate has whole
        # seconds, and a change in the second the last sync read is seen by the next change or full sync
        targets = distinct[offset:offset + k]
        offset += k
        if len(targets) < k:
            log(f"marketplace: only {len(targets)} subscriptions for k={k}")
        time.sleep(1.1)
        if targets:
            flow.inject(stack, targets)
        flow.sim_counts(stack, "sim-marketplace", reset=True)
        run = rpc.marketplace.sync_now(tenant.tenant_id)
        deadline = time.time() + 300
        while time.time() < deadline:
            state = rpc.marketplace.sync_run(tenant.tenant_id, run["run_id"])
            if state["outcome"] in ("ok", "partial", "failed", "throttled"):
                break
            time.sleep(0.2)
        counts = flow.sim_counts(stack, "sim-marketplace")
        routes = marketplace_routes(counts)
        details = sum(n for r, n in routes.items() if r.startswith("GET subscriptions/{id}"))
        lists = sum(n for r, n in routes.items() if r.startswith("GET ") and "{id}" not in r)
        changed = len({t.subscription_id for t in targets})
        out.append({"step": "marketplace", "changed_subscriptions": changed, "subscriptions": subs_total,
                    "calls": counts["total"], "list_pages": lists, "detail_gets": details,
                    "token_posts": routes.get("POST token", 0), "routes": routes, "outcome": state["outcome"],
                    "run_counts": state.get("counts")})
        log(f"marketplace sync, {changed} changed of {subs_total}: {counts['total']} calls ({lists} list pages, "
            f"{details} details)")
    return out


def run_psa(psa, args, deadline, figs):
    """Appends each figure to ``figs`` as soon as it is measured: a later failure keeps them."""
    from bench import tenants as bench_tenants

    steady_tenants, steady_lines = (2, 200) if args.quick else (4, 250)
    full_sizes = [1000] if args.quick else [int(x) for x in args.full_sizes.split(",") if x.strip()]
    with BenchStack("bench_pipe", offset=3000, extra_env=RAISED) as stack:
        flow.sim_config(stack, "sim-marketplace", {"rate_limit_per_minute": 1_000_000})
        raise_psa_limits(stack, psa)
        per_tenant = math.ceil(steady_lines * 1.6)
        made = bench_tenants.provision(stack, steady_tenants, psa=psa, customers=max(5, steady_lines // 2),
                                       lines_per_tenant=per_tenant)
        log(f"{psa}: {steady_tenants} tenants provisioned; day one")
        bench_tenants.map_all(stack, made, timeout=max(60, min(3600, deadline - time.time())))
        with stack.rpc(timeout=120) as rpc:
            figs.append(steady(stack, rpc, psa, made, steady_tenants * steady_lines, deadline))
            if psa == args.marketplace_on:
                figs += marketplace_syncs(stack, rpc, made[0], [1, 10, 100] if not args.quick else [1, 10])
        for i, size in enumerate(full_sizes):
            if time.time() > deadline - 120:
                log(f"{psa}: no time left for the first reconciliation of {size}")
                break
            figs.append(first_reconciliation(stack, psa, size, deadline, seed=100 + i))


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.economy")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--psa", default="both", choices=["autotask", "connectwise", "both"])
    parser.add_argument("--full-sizes", default="10000,50000")
    parser.add_argument("--budget-minutes", type=float, default=None)
    parser.add_argument("--carry", action="store_true",
                        help="keep the previous latest runs this run does not repeat (marked 'carried')")
    parser.add_argument("--skip-marketplace", action="store_true", help="no incremental-sync step")
    args = parser.parse_args(argv)
    psas = ["autotask", "connectwise"] if args.psa == "both" else [args.psa]
    args.marketplace_on = None if args.skip_marketplace else psas[0]
    budget = (args.budget_minutes or (20 if args.quick else 180)) * 60
    started = time.time()
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)
    signal.alarm(int(budget + 120))
    figs, failed = [], []
    for i, psa in enumerate(psas):
        share = (started + budget - time.time()) / (len(psas) - i)
        try:
            run_psa(psa, args, time.time() + share, figs)
        except (Exception, Deadline) as exc:  # noqa: BLE001
            traceback.print_exc()
            failed.append(f"{psa}: {type(exc).__name__}: {exc}"[:300])
    signal.alarm(0)
    if not figs:
        print("no figures: " + "; ".join(failed), file=sys.stderr)
        return 1
    write_results(figs, failed, carry=args.carry)
    return 1 if failed else 0


def run_key(f):
    if f["step"] == "marketplace":
        return ("marketplace", f["changed_subscriptions"])
    return (f["psa"], f["step"], f.get("lines"))


def write_results(figs, failed, carry=False):
    sources = []
    if carry:
        figs, sources = carry_over("economy", figs, run_key)
        order = {"autotask": 0, "connectwise": 1}
        figs.sort(key=lambda f: (order.get(f.get("psa"), 0), {"steady": 0, "marketplace": 1, "first": 2}[f["step"]],
                                 f.get("lines") or f.get("changed_subscriptions") or 0))
    headers = ["psa", "scenario", "lines", "PSA reads", "ref. reads", "PSA writes", "writes/line",
               "lines/read", "calls", "time s"]
    rows, notes = [], []
    for f in figs:
        if f["step"] == "steady":
            rows.append([f["psa"], f"steady: {f['changed_lines']} changed lines on {f['tenants']} posted tenants"
                                   + carried_label(f),
                         f["changed_lines"], f["psa_reads"], f["psa_reference_reads"], f["psa_writes"],
                         _num(f["writes_per_line"]), _num(f["lines_per_read"]),
                         f["psa_reads"] + f["psa_writes"] + f["psa_reference_reads"], "-"])
        elif f["step"] == "first":
            cut = "" if f.get("complete", True) else " (budget ran out: the part in sync)"
            rows.append([f["psa"], f"first reconciliation, 1 tenant, {f['customers']} customers, "
                                   f"{f['contract_lines']} contract lines in sync{cut}{carried_label(f)}",
                         f"{f['billable_lines']} billable of {f['lines']}", f["psa_reads"], f["psa_reference_reads"], f["psa_writes"],
                         _num(f["writes_per_line"]), _num(f["lines_per_read"]),
                         f["psa_reads"] + f["psa_writes"] + f["psa_reference_reads"], f["seconds"]])
            notes.append(f"{f['psa']} first reconciliation of {f['lines']} lines: {f['psa_writes']} writes = "
                         f"{_num(f['writes_per_contract_line'])} per contract line; "
                         f"{f['psa_reads'] + f['psa_writes'] + f['psa_reference_reads']} calls take "
                         f"{_duration(f['hours_at_real_limit'])} at the real limit ({REAL_LIMITS[f['psa']][0]}); "
                         f"marketplace first sync: {f['marketplace_calls']} calls.")
        else:
            rows.append(["marketplace", f"incremental sync, {f['changed_subscriptions']} changed of "
                                        f"{f['subscriptions']} subscriptions{carried_label(f)}",
                         f["changed_subscriptions"],
                         f"{f['list_pages']} list pages", "-", f"{f['detail_gets']} detail GETs", "-", "-",
                         f["calls"], "-"])
    notes += [
        f"targets (reported, not asserted): <= {TARGET_WRITES} PSA writes per changed line, >= {TARGET_READ} "
        "lines read per PSA read call. 'lines/read' = changed (steady) or billable (first) lines per posting read "
        "call; reference reads (companies/contracts/services for the mapping screens) are counted apart.",
        "counts: the simulators' /_sim/requests/count (reset before each step; vendor routes only, admin "
        "routes are not counted) and /_sim/writes; scheduled syncs and hourly reference re-reads are switched "
        "off on the bench stack so only the measured work is counted.",
        "vendor limits RAISED for these runs (simulators and the product's budget: Autotask hourly_limit, "
        "ConnectWise rate_limit_per_minute, marketplace rate_limit_per_minute; IDSYNC_AUTOTASK_HOURLY_LIMIT, "
        "IDSYNC_CONNECTWISE_REQUESTS_PER_WINDOW): the first reconciliations would otherwise run for hours; the "
        "time at the real limit is given per run.",
        f"machine load average at the end: {flow.load_average()} (the 1-minute figure includes the bench's "
        "own stack; whether other work shared the machine is said in the session's note).",
    ]
    notes += [f"failed: {x}" for x in failed] + carried_notes(sources)
    md = write("economy", {"runs": figs}, rows, headers, notes)
    print(md)


def _duration(hours):
    return f"{hours:.1f} h" if hours >= 1 else f"{hours * 60:.0f} min"


def _num(v):
    return "-" if v is None else round(float(v), 3)


if __name__ == "__main__":
    sys.exit(main())
