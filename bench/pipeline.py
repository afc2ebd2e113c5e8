"""Pipeline benchmark (issue 7): changed subscription lines from detection to posted in the PSA.

    python -m bench.pipeline [--quick] [--psa autotask|connectwise|both] [--lines 1000,10000]
                             [--tenants 200] [--paced-seconds 60] [--budget-minutes 120]

Per PSA, on a fresh stack (BenchStack "bench_pipe", ports +3000):
1. ``--tenants`` MSP tenants (bench/tenants.py), each with its own marketplace account and PSA
   database, mapped on day one (full sync, references, accept all) and posted until in sync.
2. Burst runs: N lines (each the only changed line of its PSA contract line, spread round-robin over
   the tenants) get quantity +1 in the marketplace simulator in one admin call, then every affected
   tenant gets a sync (``sync_now``). Figures: lines/s = posted lines / (last posted - first seen),
   latency seen -> posted p50/p95/p99, injection -> all posted wall time, the stage split (seen ->
   desired event -> ledger row planned -> sent -> posted).
3. Paced run: half the best burst rate, for ``--paced-seconds``: every second the next tenants in
   turn get their few changes and a sync (each tenant is visited about every 10 s, as a tenant's
   changes arrive in bursts at its sync); p95 seen -> posted against the target (< 2 s).

"seen" and "posted" are defined in bench/flow.py. The stack runs with faster-than-default sync
claiming (bench settings below) and the marketplace simulator's 60 GETs/min limit raised, so that
detection is not what is measured; each is said in the result notes.
"""
from __future__ import annotations

import argparse
import math
import signal
import sys
import time
import traceback

from bench import flow
from bench.harness import BenchStack, Deadline, alarm as _alarm, log
from bench.results import carried_label, carried_notes, carry_over, write

# the bench triggers syncs itself: claim them quickly and run many at once, so the detection of a
# burst is spread over as little time as possible (production: SYNC_POLL_SECONDS 2, concurrency 4)
BENCH_ENV = {
    "IDSYNC_SYNC_POLL_SECONDS": "0.2",
    "IDSYNC_SYNC_CONCURRENCY": "16",
}
PACED_TARGET_P95 = 2.0
IDLE_SAMPLE_SECONDS = 5.0
TARGET_RATE = 500.0




def sizes_for(args):
    if args.quick:
        return [200], 20
    return [int(x) for x in args.lines.split(",") if x.strip()], args.tenants


def provision_shape(max_lines, tenants):
    """customers and lines per tenant so that each tenant has at least max_lines/tenants contract
    lines with an active line of their own (lines spread over customers x products)."""
    per_tenant = math.ceil(max_lines / tenants)
    customers = max(5, math.ceil(per_tenant / 2))
    lines = max(50, math.ceil(per_tenant * 1.6))
    return customers, lines


def burst(stack, rpc, psa, pool, n, deadline):
    targets = flow.spread(pool, n)
    if len(targets) < n:
        log(f"only {len(targets)} distinct contract lines available for {n} lines")
    tenant_ids = sorted({tg.tenant_id for tg in targets})
    peaks, loads = {}, []
    sim = "sim-autotask" if psa == "autotask" else "sim-connectwise"
    flow.sim_counts(stack, sim, reset=True)
    flow.sim_counts(stack, "sim-marketplace", reset=True)
    # the stack's CPU at rest (timers, relay polls) for a few seconds, taken out of the per-line figure
    idle_a = flow.stack_cpu(stack)
    time.sleep(IDLE_SAMPLE_SECONDS)
    cpu_before = flow.stack_cpu(stack)
    idle_rate = {k: v / IDLE_SAMPLE_SECONDS for k, v in flow.cpu_delta(idle_a, cpu_before).items()}
    started = time.time()
    at = flow.inject(stack, targets)
    injected = flow.injections(targets, at)
    flow.trigger_syncs(rpc, tenant_ids)
    log(f"{psa}: {len(targets)} lines injected over {len(tenant_ids)} tenants; syncs queued")
    last_sample = [0.0]

    def progress(done, total):
        now = time.time()
        if now - last_sample[0] >= 5:
            last_sample[0] = now
            for q, depth in flow.queue_depths(stack).items():
                peaks[q] = max(peaks.get(q, 0), depth)
            loads.append(flow.load_average())
            log(f"  {done}/{total} contract lines posted")

    all_posted = flow.wait_posted(stack, psa, targets, at, deadline, progress=progress)
    cpu = flow.cpu_delta(cpu_before, flow.stack_cpu(stack))
    busy = time.time() - started
    net = {k: max(0.0, v - idle_rate.get(k, 0.0) * busy) for k, v in cpu.items()}
    calls = {"psa": flow.sim_counts(stack, sim), "marketplace": flow.sim_counts(stack, "sim-marketplace")}
    time.sleep(1.0)
    matches = flow.match(stack, psa, injected, at)
    fig = flow.figures(matches, at, all_posted)
    done = fig["posted"] or 1
    fig.update({"psa": psa, "kind": "burst", "tenants": len(tenant_ids), "queue_peaks": _top(peaks),
                "cpu_seconds": cpu, "idle_cpu_per_second": {k: round(v, 3) for k, v in idle_rate.items()},
                "cpu_ms_per_line": {k: round(1000 * v / done, 1)
                                    for k, v in sorted(net.items(), key=lambda kv: -kv[1])},
                "vendor_calls": {"psa_total": calls["psa"]["total"], "psa_by_route": calls["psa"]["by_route"],
                                 "marketplace_total": calls["marketplace"]["total"],
                                 "marketplace_by_route": calls["marketplace"]["by_route"]},
                "load_average": loads[-1] if loads else flow.load_average(), "timed_out": all_posted is None})
    log(f"{psa} burst {n}: {_brief(fig)}")
    return fig


def paced(stack, rpc, psa, pool, rate, seconds, deadline):
    tenants = [t for t in pool if pool[t]]
    per_visit = max(1, math.ceil(rate / max(1, len(tenants) / 10)))
    cursor = {t: 0 for t in tenants}
    injected, t_index = [], 0
    start = flow.utcnow()
    began = time.time()
    tick = 0
    while time.time() - began < seconds and time.time() < deadline:
        tick += 1
        want = int(round(rate * tick)) - len(injected)
        batch, visited = [], []
        while len(batch) < want:
            t = tenants[t_index % len(tenants)]
            t_index += 1
            visited.append(t)
            for _ in range(min(per_visit, want - len(batch))):
                batch.append(pool[t][cursor[t] % len(pool[t])])
                cursor[t] += 1
        if batch:
            at = flow.inject(stack, batch)
            injected += flow.injections(batch, at)
            flow.trigger_syncs(rpc, visited)
        sleep = began + tick - time.time()
        if sleep > 0:
            time.sleep(sleep)
    injecting = time.time() - began
    log(f"{psa} paced: {len(injected)} lines injected in {injecting:.1f}s (asked {rate:.1f}/s)")
    wait_until = min(deadline, time.time() + max(120.0, seconds))
    matches = []
    while time.time() < wait_until:
        matches = flow.match(stack, psa, injected, start)
        if all(m.posted for m in matches):
            break
        time.sleep(2.0)
    fig = flow.figures(matches, start, None)
    fig.update({"psa": psa, "kind": "paced", "asked_rate": rate, "injected_rate": len(injected) / injecting,
                "seconds": injecting, "per_tenant_visit": per_visit, "tenants": len(tenants),
                "load_average": flow.load_average(),
                "p95_target_met": (fig["latency"]["p95"] is not None and fig["latency"]["p95"] < PACED_TARGET_P95
                                   and fig["not_posted"] == 0 and fig["not_seen"] == 0)})
    log(f"{psa} paced: {_brief(fig)}")
    return fig


def _top(peaks, n=6):
    return dict(sorted(peaks.items(), key=lambda kv: -kv[1])[:n])


def _brief(fig):
    lat = fig["latency"]
    rate = fig["lines_per_second"]
    return (f"{fig['posted']}/{fig['lines']} posted, {rate and round(rate, 1)} lines/s, p50 {lat['p50']} "
            f"p95 {lat['p95']} p99 {lat['p99']} s, wall {fig['injection_to_all_posted_seconds']} s")


def run_psa(psa, sizes, n_tenants, args, budget_deadline):
    from bench import tenants as bench_tenants

    results, notes = [], []
    customers, per_tenant = provision_shape(max(sizes), n_tenants)
    with BenchStack("bench_pipe", offset=3000, extra_env={**BENCH_ENV, **extra_env(args)}) as stack:
        flow.sim_config(stack, "sim-marketplace", {"rate_limit_per_minute": 100000})
        log(f"{psa}: provisioning {n_tenants} tenants ({customers} customers, {per_tenant} lines each)")
        t0 = time.time()
        made = bench_tenants.provision(stack, n_tenants, psa=psa, customers=customers, lines_per_tenant=per_tenant)
        log(f"{psa}: provisioned in {time.time() - t0:.0f}s; mapping and first posting")
        t0 = time.time()
        bench_tenants.map_all(stack, made, timeout=max(60, min(budget_deadline - time.time() - 60, 3600)))
        setup = time.time() - t0
        log(f"{psa}: every tenant in sync after {setup:.0f}s")
        pool = flow.candidates(stack, made)
        available = sum(len(v) for v in pool.values())
        log(f"{psa}: {available} contract lines with a line of their own")
        with stack.rpc(timeout=120) as rpc:
            for n in sizes:
                results.append(burst(stack, rpc, psa, pool, min(n, available), budget_deadline))
                if results[-1]["timed_out"]:
                    notes.append(f"{psa} {n}: not every line posted before the time budget ran out")
                    break
            best = max((r["lines_per_second"] or 0) for r in results) if results else 0
            if best and args.paced_seconds > 0 and time.time() < budget_deadline - 60:
                rate = best / 2
                seconds = args.paced_seconds
                results.append(paced(stack, rpc, psa, pool, rate, seconds, budget_deadline))
        results_meta = {"psa": psa, "tenants": n_tenants, "customers_per_tenant": customers,
                        "lines_per_tenant": per_tenant, "setup_seconds": round(setup, 1),
                        "contract_lines_available": available}
    return results, results_meta, notes


def extra_env(args):
    out = {}
    for item in args.env:
        key, sep, value = item.partition("=")
        if not sep or not key.startswith("IDSYNC_"):
            raise SystemExit(f"--env wants IDSYNC_KEY=VALUE, not {item!r}")
        out[key] = value
    return out


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.pipeline")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--psa", default="both", choices=["autotask", "connectwise", "both"])
    parser.add_argument("--lines", default="1000,10000")
    parser.add_argument("--tenants", type=int, default=200)
    parser.add_argument("--paced-seconds", type=float, default=60.0)
    parser.add_argument("--budget-minutes", type=float, default=None,
                        help="hard limit for the whole run (default 20 quick, 150 full)")
    parser.add_argument("--carry", action="store_true",
                        help="keep the previous latest runs this run does not repeat (marked 'carried')")
    parser.add_argument("--env", action="append", default=[], metavar="KEY=VALUE",
                        help="extra service setting for the stack (e.g. IDSYNC_POSTING_SETTLE=0.3); said in the notes")
    args = parser.parse_args(argv)
    sizes, n_tenants = sizes_for(args)
    if args.quick:
        args.paced_seconds = min(args.paced_seconds, 20.0)
    psas = ["autotask", "connectwise"] if args.psa == "both" else [args.psa]
    budget = (args.budget_minutes or (20 if args.quick else 150)) * 60
    started = time.time()
    signal.signal(signal.SIGALRM, _alarm)
    signal.signal(signal.SIGTERM, _alarm)
    signal.alarm(int(budget + 120))   # the hard stop; the waits below end earlier on their own

    all_results, metas, notes, failed = [], [], [], []
    for i, psa in enumerate(psas):
        # each PSA gets its share of what is left of the budget
        share = (started + budget - time.time()) / (len(psas) - i)
        try:
            res, meta, extra = run_psa(psa, sizes, n_tenants, args, time.time() + share)
            all_results += res
            metas.append(meta)
            notes += extra
        except (Exception, Deadline) as exc:  # noqa: BLE001 - report what ran, say what did not
            traceback.print_exc()
            failed.append(f"{psa}: {type(exc).__name__}: {exc}"[:300])
    signal.alarm(0)
    if not all_results:
        print("no figures: " + "; ".join(failed), file=sys.stderr)
        return 1
    write_results(all_results, metas, notes + [f"failed: {f}" for f in failed], args)
    return 1 if failed else 0


def run_key(r):
    return (r["psa"], r["kind"], r["lines"] if r["kind"] == "burst" else None)


def write_results(results, metas, notes, args):
    sources = []
    if args.carry:
        results, sources = carry_over("pipeline", results, run_key)
        results.sort(key=lambda r: (r["psa"], r["kind"] != "burst", r["lines"]))
    headers = ["psa", "run", "lines", "tenants", "lines/s", "p50 s", "p95 s", "p99 s", "wall s",
               "seen->desired p50 s", "desired->planned p50 s", "planned->posted p50 s", "writes/line",
               "CPU ms/line"]
    rows = []
    for r in results:
        lat, st = r["latency"], r["stages"]
        run = "burst" if r["kind"] == "burst" else f"paced {r['injected_rate']:.1f}/s x {r['seconds']:.0f}s"
        run += carried_label(r)
        planned_to_posted = None
        if st["planned_to_sent"]["p50"] is not None and st["sent_to_posted"]["p50"] is not None:
            planned_to_posted = st["planned_to_sent"]["p50"] + st["sent_to_posted"]["p50"]
        rows.append([r["psa"], run, f"{r['posted']}/{r['lines']}", r["tenants"], _num(r["lines_per_second"]),
                     _num(lat["p50"]), _num(lat["p95"]), _num(lat["p99"]),
                     _num(r["injection_to_all_posted_seconds"]), _num(st["seen_to_desired"]["p50"]),
                     _num(st["desired_to_planned"]["p50"]), _num(planned_to_posted), _num(r["ops_per_line"]),
                     _num(sum(r["cpu_ms_per_line"].values())) if r.get("cpu_ms_per_line") else "-"])
    load = flow.load_average()
    out_notes = [
        "seen = the subscription_line_changed event's seen_at (our sync detected the change); posted = the PSA "
        "ledger row's posted_at (committed right after the simulator answered the write). Each changed line is "
        "the only changed line of its PSA contract line, so the match is exact.",
        "lines/s = posted lines / (last posted - first seen); wall = injection -> every line posted (includes "
        "the marketplace detection).",
        f"lines spread round-robin over {', '.join(str(m['tenants']) for m in metas)} tenants so no tenant's "
        "vendor budget (Autotask 40% of 10,000 requests/hour per database, ConnectWise 40% of 1,000/minute) "
        "binds; PSA simulator limits at their defaults.",
        "bench settings: IDSYNC_SYNC_POLL_SECONDS=0.2, IDSYNC_SYNC_CONCURRENCY=16 (faster claiming of the "
        "syncs the bench triggers); marketplace simulator rate limit raised from 60 to 100,000 GETs/min so the "
        "vendor's pace does not spread the detection (at 60/min a tenant's detection is <= 60 changed "
        "subscriptions a minute).",
        f"paced target: p95 seen->posted < {PACED_TARGET_P95:g} s at half of >= {TARGET_RATE:g} lines/s; "
        "burst target >= 500 lines/s.",
        f"machine load average at the end: {load} (the 1-minute figure includes the bench's own stack; "
        "whether other work shared the machine is said in the session's note).",
    ]
    for r in results:
        if r["kind"] == "paced":
            met = "met" if r["p95_target_met"] else "NOT met"
            best = 2 * r["asked_rate"]   # the paced rate is half the best burst of the same run
            out_notes.append(f"{r['psa']} paced: p95 {_num(r['latency']['p95'])} s at {r['injected_rate']:.1f} "
                             f"lines/s (half of the measured {best:.1f}, not of 500): target {met}.")
    for psa in sorted({r["psa"] for r in results}):
        bursts = [r for r in results if r["psa"] == psa and r["kind"] == "burst" and r.get("cpu_ms_per_line")]
        if bursts:
            big = max(bursts, key=lambda r: r["lines"])
            per = ", ".join(f"{k} {v:g}" for k, v in big["cpu_ms_per_line"].items() if v >= 0.5)
            total = sum(big["cpu_ms_per_line"].values())
            out_notes.append(
                f"{psa} {big['lines']}-line burst: CPU ms per posted line by process, net of the stack's CPU at "
                f"rest: {per} (total {total:.0f} ms, RabbitMQ not counted): on 2 cores the pipeline cannot pass ~{2000 / total:.0f} lines/s even with "
                "the machine to itself; the queue that grew most: "
                f"{next(iter(big['queue_peaks']), '-')}.")
    if args.env:
        out_notes.append(f"extra settings for this run: {', '.join(args.env)}")
    out_notes += notes + carried_notes(sources)
    md = write("pipeline", {"runs": results, "setup": metas, "args": vars(args)}, rows, headers, out_notes)
    print(md)


def _num(v):
    return "-" if v is None else round(float(v), 3)


if __name__ == "__main__":
    sys.exit(main())
