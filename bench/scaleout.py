"""Scale-out of Autotask posting: 1, 2 and 4 replicas of the autotask service against a PSA that
answers every call after 100 ms.

python -m bench.scaleout [--quick] [--replicas 1,2,4] [--lines N] [--tenants N] [--latency S]
                         [--env KEY=VALUE ...]

Stack ``bench_scale`` (BenchStack, ports +4000, its own database and vhost): only the Autotask
simulator, the gateway (tenant rows and encrypted credentials; the autotask service fetches them by
RPC) and the autotask replicas (extra processes, tests/support/autotask_posting.Replicas). A kit
latency rule on the simulator delays every vendor call by ``--latency`` seconds.

Tenants: ``--tenants`` (40; --quick 20), each with its own simulator database (own hourly budget and
thread slots) and credentials; lines spread evenly (contracts x 5 services each, 10 units to start).
Per replica count (one step each, on the same tenants and lines):

1. start the replicas, wait until healthy;
2. publish a fresh desired state for every line (``--lines``: 2,000; --quick 200), tenant by tenant,
   as the mapping service's outbox does (autotask_line_desired);
3. wait until every line has that desired version, is ``in_sync`` with nothing due or leased, and
   the ledger has no open rows; seconds = last ``posted_at`` of the step's ledger rows - the moment
   before the first publish (database clock); lines/s = lines / seconds;
4. check: simulator units today == desired for every line; the simulator's write log equals the
   ledger's posted rows (no write applied twice, none missing), cumulative over the steps;
5. budget: each tenant's calls in the simulator's rolling hour (ThresholdInformation, its own
   counter) vs the hourly limit and the kit's share; 429s answered to the replicas (thread
   threshold or hourly budget; the simulator's thread gate refuses the 4th concurrent call per
   database and endpoint, so 0 means never more than the thread limit in flight), and an upper
   bound of concurrent writes per tenant from the ledger (sent_at..posted_at overlaps);
6. stop the replicas (their /metrics read first).

Results: bench/results/scaleout-latest.{json,md}. CPU: the machine's busy share and each process's
CPU seconds per step, so a poor ratio can be told apart from a saturated machine.
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import datetime as dt
import os
import random
import sys
import time

import requests
from sqlalchemy import text

from bench import results
from bench.harness import BenchStack
from tests.support import infra

LATENCY = 0.1
SERVICES_PER_CONTRACT = 5
HOURLY_LIMIT = 10_000
THREAD_LIMIT = 3
# the services' default (POSTING_TENANTS_IN_PARALLEL): a replica posts for this many tenants at once
TENANTS_IN_PARALLEL = int(os.environ.get("IDSYNC_POSTING_TENANTS_IN_PARALLEL", "4"))
# posting settings of the replicas: the product's defaults (services/autotask/config.yml) unless
# --env says otherwise; only the log level is lowered so logging is not what is measured
REPLICA_ENV = {"IDSYNC_LOG_LEVEL": "WARNING"}
REPLICA_BASE_PORT = 8790   # + the stack's offset


# --- CPU accounting -------------------------------------------------------------------------------
def machine_ticks():
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts), idle


def process_cpu_seconds(pid):
    """utime + stime of a process and its reaped children, in seconds (0 if gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
    except (OSError, TypeError):
        return 0.0
    ticks = sum(int(x) for x in fields[11:15])
    return ticks / os.sysconf("SC_CLK_TCK")


class CpuMeter:
    def __init__(self, pids):
        self.pids = dict(pids)
        self.start = {n: process_cpu_seconds(p) for n, p in self.pids.items()}
        self.m0 = machine_ticks()
        self.t0 = time.monotonic()

    def read(self):
        total, idle = machine_ticks()
        dt_total = max(1, total - self.m0[0])
        busy = 1 - (idle - self.m0[1]) / dt_total
        wall = time.monotonic() - self.t0
        procs = {n: round(process_cpu_seconds(p) - self.start[n], 1) for n, p in self.pids.items()}
        return {"machine_busy": round(busy, 3), "wall_seconds": round(wall, 1), "process_cpu_seconds": procs}


# --- the bench ------------------------------------------------------------------------------------
class Scaleout:
    def __init__(self, args):
        self.args = args
        env = dict(REPLICA_ENV)
        for item in args.env or ():
            key, _, value = item.partition("=")
            env[key] = value
        self.replica_env = env
        self.stack = BenchStack("bench_scale", offset=4000)
        # tests.support.autotask_posting finds the simulator through IDSYNC_PORT_OFFSET
        os.environ["IDSYNC_PORT_OFFSET"] = str(self.stack.offset)
        self.tenants = []
        self.want = {}          # (tenant index, contract, service) -> units desired
        self.rng = random.Random(7)
        self.replicas = None

    # --- set-up -----------------------------------------------------------------------------------
    def sim(self, path):
        return self.stack.url("sim-autotask", path)

    def setup(self):
        from tests.support.autotask_posting import AutotaskTenant

        self.stack.prepare()
        # names before --no-seed: `stack.py up --no-seed a b` is refused by argparse (BenchStack.start)
        self.stack._run([sys.executable, "scripts/stack.py", "up", "sim-autotask", "gateway", "--no-seed"])
        requests.delete(self.sim("/_sim/faults"), timeout=10).raise_for_status()
        n, per = self.args.tenants, self.args.lines // self.args.tenants
        contracts = max(1, per // SERVICES_PER_CONTRACT)
        gateway = self.stack.engine("gateway")
        for _ in range(n):
            t = AutotaskTenant(self.stack.env, gateway, self.stack.amqp_uri, contracts=contracts,
                               services=SERVICES_PER_CONTRACT,
                               lines={(i, j): 10 for i in range(contracts) for j in range(SERVICES_PER_CONTRACT)})
            self.tenants.append(t)
            for c in t.contract_ids:
                for s in t.service_ids:
                    self.want[(len(self.tenants) - 1, c, s)] = 10
        self.lines = len(self.want)
        self.bind_event_sink()
        rule = {"endpoint": r"^[A-Z]+ /ATServicesRest/", "kind": "latency", "seconds": self.args.latency}
        requests.post(self.sim("/_sim/faults"), json=rule, timeout=10).raise_for_status()

    def bind_event_sink(self):
        """A queue bound to autotask.events keeping only the newest message: line_posted events are
        routable (as with the mapping service listening), so the replicas' outbox relays publish them
        as in production instead of parking them as unroutable."""
        from kombu import Connection, Queue
        from nameko.standalone.events import get_event_exchange

        exchange = get_event_exchange("autotask", {})
        queue = Queue("bench_scale.autotask_events", exchange=exchange, routing_key="#", durable=False,
                      queue_arguments={"x-max-length": 1})
        with Connection(self.stack.amqp_uri) as conn:
            queue(conn.default_channel).declare()

    def start_replicas(self, count):
        from tests.support.autotask_posting import Replicas

        self.replicas = Replicas(self.stack.env, self.replica_env, base_port=REPLICA_BASE_PORT + self.stack.offset)
        for i in range(count):
            self.replicas.start(f"autotask-scale-r{i + 1}")
        self.replicas.wait_healthy(timeout=90)
        time.sleep(1.0)   # consumers declared and the first timer ticks done

    def stop_replicas(self):
        if self.replicas is not None:
            self.replicas.stop_all()
            self.replicas = None

    # --- one step ---------------------------------------------------------------------------------
    def publish(self):
        pub = self.tenants[0].publisher()
        for ti, t in enumerate(self.tenants):
            for c in t.contract_ids:
                for s in t.service_ids:
                    key = (ti, c, s)
                    self.want[key] += self.rng.randint(1, 5)
                    t.desire(c, s, self.want[key], publisher=pub)

    def progress(self, version):
        with self.stack.engine("autotask").connect() as conn:
            row = conn.execute(text("""
                SELECT count(*) FILTER (WHERE desired_version >= :v) AS recorded,
                       count(*) FILTER (WHERE desired_version >= :v AND status = 'in_sync' AND due_at IS NULL
                                        AND lease_owner IS NULL) AS done,
                       count(*) FILTER (WHERE status IN ('held', 'failed')) AS stuck
                FROM posting_groups"""), {"v": version}).one()
            open_rows = conn.execute(text(
                "SELECT count(*) FROM postings WHERE state IN ('planned', 'posting', 'failed')")).scalar_one()
        return row.recorded, row.done, row.stuck, open_rows

    def step(self, count, version):
        engine = self.stack.engine("autotask")
        requests.get(self.sim("/_sim/requests/count"), params={"reset": 1}, timeout=10)
        pids = {name: self.replicas.pid(name) for name in self.replicas.alive()}
        pids.update({"sim-autotask": self.stack.pid("sim-autotask"), "gateway": self.stack.pid("gateway")})
        load0 = os.getloadavg()[0]
        with engine.connect() as conn:
            t0 = conn.execute(text("SELECT clock_timestamp()")).scalar_one()
        cpu = CpuMeter(pids)
        started = time.monotonic()
        self.publish()
        publish_seconds = time.monotonic() - started
        timeout = max(120.0, self.lines * 0.5)
        deadline = started + timeout
        complete = False
        while time.monotonic() < deadline:
            recorded, done, stuck, open_rows = self.progress(version)
            if done == self.lines and open_rows == 0:
                complete = True
                break
            if stuck:
                print(f"  {stuck} lines held or failed", flush=True)
                break
            time.sleep(0.25)
        usage = cpu.read()
        load1 = os.getloadavg()[0]
        with engine.connect() as conn:
            times = conn.execute(text("""
                SELECT min(posted_at) AS first, max(posted_at) AS last, count(*) AS n,
                       avg(extract(epoch FROM posted_at - sent_at)) AS send_seconds,
                       sum(extract(epoch FROM posted_at - sent_at)) AS busy_seconds
                FROM postings WHERE desired_version = :v AND state = 'posted'"""), {"v": version}).one()
            ingest = conn.execute(text("SELECT max(touched_at) FROM posting_groups WHERE desired_version = :v"),
                                  {"v": version}).scalar()
        seconds = (times.last - t0).total_seconds() if times.last else None
        counts = requests.get(self.sim("/_sim/requests/count"), timeout=10).json()["by_endpoint"]
        writes = sum(n for k, n in counts.items() if not k.startswith("GET") and "/query" not in k)
        reads = sum(n for k, n in counts.items()
                    if (k.startswith("GET") or "/query" in k) and "ZoneInformation" not in k)
        metrics = self.replica_metrics()
        return {
            "replicas": count, "lines": self.lines, "complete": complete,
            "seconds": round(seconds, 2) if seconds else None,
            "lines_per_second": round(self.lines / seconds, 1) if seconds and complete else None,
            "posted_rows": times.n, "publish_seconds": round(publish_seconds, 2),
            "ingest_seconds": round((ingest - t0).total_seconds(), 2) if ingest else None,
            "first_posted_seconds": round((times.first - t0).total_seconds(), 2) if times.first else None,
            "vendor_writes": writes, "vendor_reads": reads,
            # Little's law: writes in flight on average (sent_at..posted_at, so an upper bound of the
            # vendor's own count) vs the most a replica sends at once (thread limit x tenants in parallel)
            "send_to_posted_ms": round(float(times.send_seconds or 0) * 1000),
            "mean_writes_in_flight": round(float(times.busy_seconds or 0) / seconds, 1) if seconds else None,
            "loadavg_before": round(load0, 2), "loadavg_after": round(load1, 2), **usage, **metrics,
        }

    def replica_metrics(self):
        texts = []
        for name in self.replicas.alive():
            with contextlib.suppress(requests.RequestException):
                texts.append(self.replicas.metrics(name))

        def total(name, **labels):
            return int(sum(infra.metric_value(t, name, **labels) for t in texts))
        return {
            "http_429": total("psa_requests_total", psa="autotask", status="429"),
            "http_5xx": sum(total("psa_requests_total", psa="autotask", status=str(s)) for s in (500, 502, 503, 504)),
            "postings_failed": total("postings_total", psa="autotask", result="failed"),
            "postings_posted": total("postings_total", psa="autotask", result="posted"),
        }

    # --- checks -----------------------------------------------------------------------------------
    def check(self):
        """Units == desired for every line; write log == posted ledger rows per tenant; budgets."""
        from services.autotask.client import AutotaskClient
        from tests.support.autotask_posting import applied_operations, ledger_operations

        engine = self.stack.engine("autotask")
        log = requests.get(self.sim("/_sim/writes"), timeout=60).json()
        with engine.connect() as conn:
            rows = [dict(r._mapping) for r in conn.execute(text(
                "SELECT * FROM postings WHERE state = 'posted' ORDER BY id"))]
            budget = dict(conn.execute(text("""
                SELECT tenant_id, sum(used) FROM request_budget
                WHERE minute > now() - interval '1 hour' GROUP BY tenant_id""")).all())
            intervals = conn.execute(text(
                "SELECT tenant_id, sent_at, posted_at FROM postings WHERE state = 'posted' AND sent_at IS NOT NULL"
            )).all()
        by_tenant = collections.defaultdict(list)
        for r in rows:
            by_tenant[r["tenant_id"]].append(r)
        wrong, differ, hour = [], [], []
        for ti, t in enumerate(self.tenants):
            state = t.state()
            for c in t.contract_ids:
                for s in t.service_ids:
                    units = t.units(state, c, s)
                    if units != self.want[(ti, c, s)]:
                        wrong.append((t.tenant_id, c, s, units, self.want[(ti, c, s)]))
            applied = applied_operations(t, state, t.writes(state, log=log))
            posted = ledger_operations(by_tenant[t.tenant_id])
            if applied != posted:
                differ.append((t.tenant_id, dict(applied - posted), dict(posted - applied)))
            threshold = AutotaskClient(t.credentials()).threshold_information()
            hour.append(int(threshold["current_timeframe_request_count"]))
        return {
            "tenant_requests_hour": hour,
            "units_wrong": len(wrong), "units_wrong_sample": wrong[:5],
            "log_vs_ledger_differ": len(differ), "log_vs_ledger_sample": differ[:3],
            "ok": not wrong and not differ,
            "max_tenant_requests_hour": max(hour), "min_tenant_requests_hour": min(hour),
            "max_tenant_budget_used": max(budget.values()) if budget else 0,
            "max_concurrent_writes_upper_bound": max_overlap(intervals),
        }

    # --- run ----------------------------------------------------------------------------------------
    def run(self):
        out = []
        print(f"setting up {self.args.tenants} tenants, {self.args.lines} lines, latency {self.args.latency}s",
              flush=True)
        self.setup()
        for k, count in enumerate(self.args.replicas):
            self.start_replicas(count)
            try:
                print(f"== {count} replica(s): {self.lines} lines", flush=True)
                figures = self.step(count, version=k + 1)
            finally:
                self.stop_replicas()
            figures.update(self.check())
            print("   " + ", ".join(f"{key}={figures[key]}" for key in (
                "complete", "seconds", "lines_per_second", "ingest_seconds", "first_posted_seconds",
                "send_to_posted_ms", "mean_writes_in_flight", "http_429",
                "ok", "max_tenant_requests_hour", "max_concurrent_writes_upper_bound", "machine_busy",
                "process_cpu_seconds")), flush=True)
            out.append(figures)
        return out


def max_overlap(intervals):
    """Most [sent_at, posted_at] intervals of one tenant open at once."""
    events = collections.defaultdict(list)
    for tenant, start, end in intervals:
        if end is None:
            continue
        events[tenant] += [(start, 1), (end, -1)]
    best = 0
    for evs in events.values():
        n = 0
        for _, d in sorted(evs, key=lambda e: (e[0], e[1])):
            n += d
            best = max(best, n)
    return best


def limits(s):
    """A reading of one step: the machine's CPU, or the PSA's latency x the thread limit."""
    cap = s["replicas"] * THREAD_LIMIT * TENANTS_IN_PARALLEL
    inflight = s["mean_writes_in_flight"] or 0
    if s["machine_busy"] >= 0.9:
        what = f"CPU (machine {s['machine_busy']:.0%} busy; a send took {s['send_to_posted_ms']} ms sent to posted)"
    else:
        what = (f"PSA latency x thread limit (each replica posts {TENANTS_IN_PARALLEL} tenants' batches at a time, "
                f"{THREAD_LIMIT} in flight each)")
    return f"{s['replicas']}r {inflight} of {cap} writes in flight on average - {what}"


def report(args, steps, env):
    base = next((s["lines_per_second"] for s in steps if s["replicas"] == 1 and s["lines_per_second"]), None)
    rows = []
    for s in steps:
        ratio = round(s["lines_per_second"] / base, 2) if base and s["lines_per_second"] else None
        s["ratio_to_1"] = ratio
        rows.append([s["replicas"], s["lines"], s["seconds"], s["lines_per_second"], ratio,
                     f"{s['max_tenant_requests_hour']} / {HOURLY_LIMIT} (kit share {int(HOURLY_LIMIT * 0.4)})",
                     s["http_429"], s["max_concurrent_writes_upper_bound"],
                     f"{s['mean_writes_in_flight']} / {s['replicas'] * THREAD_LIMIT * TENANTS_IN_PARALLEL}",
                     s["send_to_posted_ms"],
                     "yes" if s["ok"] and s["complete"] else "NO", f"{s['machine_busy']:.0%}"])
    headers = ["replicas", "lines", "seconds", "lines/s", "ratio to 1", "max tenant requests/hour vs limit",
               "429s seen", "max concurrent writes/tenant (bound)", "mean writes in flight / most a replica sends x replicas",
               "send to posted ms", "correct", "machine CPU busy"]
    per_tenant = args.lines // args.tenants
    notes = [
        f"{args.tenants} tenants, each its own Autotask simulator database (own 10,000/h budget and "
        f"{THREAD_LIMIT}-thread limit per endpoint); {per_tenant} lines per tenant; {args.lines} fresh desired "
        f"states per step (one ContractServiceAdjustments each), published tenant by tenant.",
        f"{int(args.latency * 1000)} ms simulated latency on every Autotask call (kit latency fault rule); "
        "time = first publish to the last ledger posted_at of the step (events, settle, claim, read, post).",
        "Correct = simulator units today == desired for every line, and the simulator's write log equals the "
        "posted ledger rows (no write applied twice), cumulative over the steps.",
        "429s seen: answers with 429 counted by the replicas (psa_requests_total); the simulator's thread gate "
        "answers 429 to a 4th concurrent call per database and endpoint, so 0 means the thread limit held. "
        "Concurrent writes bound: most ledger sent_at..posted_at intervals of one tenant overlapping.",
        "Replica settings: " + ", ".join(f"{k}={v}" for k, v in sorted(env.items())) + " (others: config.yml "
        "defaults).",
        "Machine load (1-min loadavg before/after per step): " + "; ".join(
            f"{s['replicas']}r {s['loadavg_before']}/{s['loadavg_after']}" for s in steps)
        + ". CPU seconds per step: " + "; ".join(
            f"{s['replicas']}r " + ", ".join(f"{k} {v}" for k, v in s["process_cpu_seconds"].items()) for s in steps),
    ]
    notes.append("What limits: " + "; ".join(limits(s) for s in steps) + ".")
    notes += args.note or []
    return rows, headers, notes


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.scaleout")
    parser.add_argument("--quick", action="store_true", help="200 lines on 20 tenants (a smoke run)")
    parser.add_argument("--replicas", default="1,2,4")
    parser.add_argument("--lines", type=int)
    parser.add_argument("--tenants", type=int)
    parser.add_argument("--latency", type=float, default=LATENCY)
    parser.add_argument("--env", action="append", help="KEY=VALUE for the replicas (tuning experiments)")
    parser.add_argument("--note", action="append", help="a note for the results (what limits)")
    parser.add_argument("--no-write", action="store_true", help="print the figures, do not write results")
    args = parser.parse_args(argv)
    args.replicas = [int(x) for x in args.replicas.split(",")]
    args.tenants = args.tenants or (20 if args.quick else 40)
    args.lines = args.lines or (200 if args.quick else 2000)
    if args.lines % (args.tenants * SERVICES_PER_CONTRACT):
        parser.error(f"--lines must be a multiple of tenants x {SERVICES_PER_CONTRACT}")
    bench = Scaleout(args)
    try:
        steps = bench.run()
    finally:
        bench.stop_replicas()
        with contextlib.suppress(Exception):
            requests.delete(bench.sim("/_sim/faults"), timeout=10)
        bench.stack.stop()
        for engine in bench.stack._engines.values():
            engine.dispose()
    rows, headers, notes = report(args, steps, bench.replica_env)
    figures = {"latency_seconds": args.latency, "tenants": args.tenants, "lines": args.lines,
               "quick": args.quick, "replica_env": bench.replica_env, "steps": steps}
    if args.no_write:
        print(results.markdown({"bench": "scaleout", "at": dt.datetime.now(dt.timezone.utc).isoformat(),
                                "commit": results.commit(), "machine": results.machine(), "notes": notes},
                               rows, headers))
    else:
        print(results.write("scaleout", figures, rows, headers, notes))
    return 0 if all(s["ok"] and s["complete"] for s in steps) else 1


if __name__ == "__main__":
    sys.exit(main())
