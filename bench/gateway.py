"""Gateway bench: how fast the three mapping screens' lists answer through the JSON API.

python -m bench.gateway [--quick] [--clients 20] [--duration 60] [--setup events|sync]

One tenant holding 10,000 marketplace customers with ~40,000 subscription lines (~23,500
subscriptions) and the generated catalogue (~62 MPNs), against a PSA holding most of those
customers (bench/gateway_seed.py says how the state is built and what share is mapped). Then 20
closed-loop clients, each signed in as its own billing user (session cookie + CSRF header), open
mapping screens for `--duration` seconds after a warm-up, on loopback: a real HTTP request to the
gateway, which calls the mapping service over RabbitMQ, which reads PostgreSQL.

What a client sends per screen view, as the portal's screens do (gateway/portal_mapping.py):
one list request of 50 rows - the default first page, a search (terms a person types: a name
word, a whole name, an id, a domain or an MPN part), a status filter (the tabs), or a later page
(drawn uniformly over all pages, so deep offsets are in it) - then the five tab counts
(`status=<s>&per_page=1`, one per status, which every screen shows whatever the filter). Screens:
customers 40 %, subscription lines 40 %, products 20 %; list kinds: default 35 %, search 25 %,
status 25 %, later page 15 %. No think time: 20 clients is 20 requests in flight all the time,
a much harsher load than 20 people reading their screens.

The load driver (bench/gateway_load.py) is a separate process of plain threads with
requests.Session: see its docstring for why not a load library.

Time: the measurement is 15 s + 60 s; the setup is far longer (bench/gateway_seed.py has the
figures): the mapping service takes in the tenant's ~50,000 events one at a time under the
tenant's lock, and the first PSA read and the product bulk-accept each re-plan every contract line
of the tenant (quadratic today in services/mapping/recompute.py). On a busy 2-core machine that
was well over an hour; each phase is bounded (an hour). The stack is stopped at the end, also on
an error, Ctrl-C or SIGTERM.

--quick: 1,000 customers / 4,000 lines, 10 s after a 3 s warm-up (a smoke run of the instrument).
Results: bench/results/gateway-latest.{json,md} and the README table. Latency targets are reported,
not asserted (the issue: p95 well under 1 s at 10,000 customers with 20 clients).
"""
import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time

from bench import results
from bench.gateway_seed import setup
from bench.harness import BenchStack
from common.secrets import ROOT

STATUSES = ("unmapped", "conflict", "suggested", "mapped", "ignored")  # gateway/portal_support.py
PER_PAGE = 50
SCREEN_WEIGHTS = {"customers": 40, "lines": 40, "products": 20}
KIND_WEIGHTS = {"default": 35, "search": 25, "status": 25, "later page": 15}
# what the lists and the setup need; reporting, connectwise and migration would only compete for the
# 2 cores while the mapping service takes in the tenant (they are idle during the measurement)
PROCESSES = ["sim-marketplace", "sim-autotask", "marketplace", "mapping", "autotask", "gateway"]
FULL = {"customers": 10_000, "lines": 40_000, "duration": 60, "warmup": 15}
QUICK = {"customers": 1_000, "lines": 4_000, "duration": 10, "warmup": 3}


def log(msg):
    print(msg, flush=True)


# --- what the screens ask ------------------------------------------------------------------------
def search_terms(state, rng):
    customers = state["customers"]
    subs = state["subscriptions"]
    picked = rng.sample(customers, min(20, len(customers)))
    words = sorted({w for c in customers for w in c["name"].split() if len(w) > 3 and w.isalpha()})
    return {
        "customers": ([rng.choice(words).lower() for _ in range(10)]                 # "dental", "harbor"
                      + [c["name"] for c in picked[:6]]                             # a whole name
                      + [c["id"] for c in picked[6:10]]                             # a customer id
                      + [c["domain"].split(".")[0][:8] for c in picked[10:14] if c.get("domain")]),
        "lines": ([rng.choice(words).lower() for _ in range(8)]                      # customer name word
                  + [s["id"] for s in rng.sample(subs, min(6, len(subs)))]           # subscription id
                  + [p["mpn"].split(":")[0] for p in rng.sample(state["products"], 4)]  # MPN part
                  + ["business premium", "exchange online", "e3", "copilot"]),      # product name
        "products": ["365", "exchange", "e3", "business", "p1m", "teams", "CFQ7TTC0LH18", "visio"],
    }


def make_plan(setup_result, base, password, users, duration, warmup, counts=True, think=0.0, seed=7):
    rng = random.Random(seed)
    terms = search_terms(setup_result["state"], rng)
    totals = {screen: sum(v.values()) for screen, v in setup_result["statuses"].items()}
    views = []
    for screen, sw in SCREEN_WEIGHTS.items():
        pages = max(1, -(-totals[screen] // PER_PAGE))
        later = sorted({rng.randint(2, pages) for _ in range(60)}) if pages > 1 else [1]
        params = {
            "default": [{"page": 1, "per_page": PER_PAGE}],
            "search": [{"search": t, "per_page": PER_PAGE} for t in terms[screen]],
            # the tabs a person works through most: unmapped and suggested
            "status": [{"status": s, "per_page": PER_PAGE}
                       for s in ("unmapped",) * 3 + ("suggested",) * 3 + ("mapped",) * 2 + ("conflict", "ignored")],
            "later page": [{"page": p, "per_page": PER_PAGE} for p in later],
        }
        for kind, kw in KIND_WEIGHTS.items():
            views.append({"weight": sw * kw, "screen": screen, "kind": kind, "params": params[kind]})
    return {"base": base, "users": users, "password": password, "duration": duration, "warmup": warmup,
            "seed": seed, "think": think, "timeout": 30, "views": views,
            "counts": [{"status": s, "page": 1, "per_page": 1} for s in STATUSES] if counts else []}


# --- CPU shares during the window ----------------------------------------------------------------
def _machine_ticks():
    with open("/proc/stat") as f:
        parts = [int(x) for x in f.readline().split()[1:]]
    idle = parts[3] + parts[4]
    return sum(parts), idle


def _proc_ticks(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return int(fields[11]) + int(fields[12])  # utime + stime
    except (OSError, TypeError, IndexError):
        return None


def cpu_sample(pids):
    total, idle = _machine_ticks()
    return {"total": total, "idle": idle, "procs": {n: _proc_ticks(p) for n, p in pids.items()}}


def cpu_shares(a, b):
    """% of one core, per process and for the whole machine (2 cores = 200 %)."""
    cores = os.cpu_count() or 1
    wall_ticks = (b["total"] - a["total"]) / cores
    if wall_ticks <= 0:
        return {}
    out = {"machine_busy_pct_of_all_cores": round(100 * (1 - (b["idle"] - a["idle"]) / (b["total"] - a["total"])), 1)}
    for name, t0 in a["procs"].items():
        t1 = b["procs"].get(name)
        if t0 is not None and t1 is not None:
            out[f"{name}_pct_of_one_core"] = round(100 * (t1 - t0) / wall_ticks, 1)
    return out


# --- the run -------------------------------------------------------------------------------------
def drive(stack, plan):
    """Run the load driver process; returns its output plus the CPU shares of the measured window."""
    with tempfile.TemporaryDirectory(prefix="bench-gw-") as tmp:
        plan_path, out_path = os.path.join(tmp, "plan.json"), os.path.join(tmp, "out.json")
        with open(plan_path, "w") as f:
            json.dump(plan, f)
        env = {k: v for k, v in os.environ.items() if not k.startswith("IDSYNC_")}
        proc = subprocess.Popen([sys.executable, "-m", "bench.gateway_load", plan_path, out_path], cwd=ROOT, env=env,
                                stdout=subprocess.PIPE, text=True)
        try:
            pids = {"gateway": stack.pid("gateway"), "mapping": stack.pid("mapping"), "load_driver": proc.pid}
            line = proc.stdout.readline()  # after every sign-in: "WINDOW start record_from end"
            if not line.startswith("WINDOW"):
                raise RuntimeError(f"the load driver did not start its clients ({line!r})")
            _, record_from, end = (float(x) for x in line.split()[1:])
            time.sleep(max(0.0, record_from + 0.5 - time.time()))
            a = cpu_sample(pids)
            time.sleep(max(0.0, end - 0.5 - time.time()))
            b = cpu_sample(pids)
            proc.wait(timeout=max(1.0, end + plan["timeout"] + 60 - time.time()))
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        if proc.returncode != 0:
            raise RuntimeError(f"the load driver failed (exit {proc.returncode})")
        with open(out_path) as f:
            out = json.load(f)
    out["cpu"] = cpu_shares(a, b)
    return out


def figures_and_rows(out, duration):
    per_kind, rows = {}, []
    order = [f"{s} {k}" for s in SCREEN_WEIGHTS for k in list(KIND_WEIGHTS) + ["tab counts"]]
    everything = []
    for label in order + sorted(set(out["samples"]) - set(order)):
        values = out["samples"].get(label)
        if not values:
            continue
        everything += values
        s = results.summary(values)
        fig = {**{k: (round(v, 1) if isinstance(v, float) else v) for k, v in s.items()},
               "rps": round(len(values) / duration, 1), "errors": out["errors"].get(label, 0)}
        per_kind[label] = fig
        rows.append([label, fig["n"], fig["p50"], fig["p95"], fig["p99"], fig["max"], fig["rps"], fig["errors"]])
    s = results.summary(everything)
    total = {**{k: (round(v, 1) if isinstance(v, float) else v) for k, v in s.items()},
             "rps": round(len(everything) / duration, 1), "errors": sum(out["errors"].values())}
    rows.append(["all requests", total["n"], total["p50"], total["p95"], total["p99"], total["max"], total["rps"],
                 total["errors"]])
    return per_kind, total, rows


def main(argv=None):
    parser = argparse.ArgumentParser(prog="python -m bench.gateway")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--warmup", type=float)
    parser.add_argument("--customers", type=int)
    parser.add_argument("--lines", type=int)
    parser.add_argument("--setup", choices=("events", "sync"), default="events",
                        help="how marketplace data reaches the mapping service (bench/gateway_seed.py)")
    parser.add_argument("--think", type=float, default=0.0, help="mean pause between screen views, seconds")
    parser.add_argument("--no-counts", action="store_true", help="list requests only, no tab counts")
    args = parser.parse_args(argv)
    size = dict(QUICK if args.quick else FULL)
    for key in ("customers", "lines", "duration", "warmup"):
        if getattr(args, key) is not None:
            size[key] = getattr(args, key)
    # a TERM (a CI timeout, `kill`) ends the run through the stack's __exit__: nothing left running
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    load_before = os.getloadavg()
    log(f"gateway bench: {size}, {args.clients} clients, setup via {args.setup}; load average {load_before}")
    with BenchStack("bench_gw", offset=5000, processes=PROCESSES) as stack:
        log(f"  stack up (database idsync_{stack.name}, ports +{stack.offset})")
        built = setup(stack, size["customers"], size["lines"], args.clients, via=args.setup, log=log)
        tenant = built["tenant"]
        settle(stack)
        plan = make_plan(built, stack.url("gateway"), tenant["password"], tenant["clerks"], size["duration"],
                         size["warmup"], counts=not args.no_counts, think=args.think)
        log(f"  driving {args.clients} clients for {size['duration']}s after {size['warmup']}s warm-up")
        out = drive(stack, plan)
    per_kind, total, rows = figures_and_rows(out, size["duration"])
    sizes, statuses = built["sizes"], built["statuses"]
    figures = {"size": sizes, "statuses": statuses, "decisions": built["decisions"], "setup": built["took"],
               "setup_via": args.setup, "clients": out["clients"], "duration_s": size["duration"],
               "warmup_s": size["warmup"], "think_s": args.think, "counts": not args.no_counts,
               "per_kind": per_kind, "all": total, "cpu": out["cpu"], "load_driver_cpu_s": out["cpu_s"],
               "load_average_before": [round(x, 2) for x in load_before], "error_examples": out["error_examples"],
               "login_failures": out["login_failures"], "quick": args.quick}
    notes = notes_for(figures)
    md = results.write("gateway", figures, rows,
                       ["request (screen, kind)", "n", "p50 ms", "p95 ms", "p99 ms", "max ms", "req/s", "errors"],
                       notes)
    print(md)
    return 0 if total["n"] and not out["login_failures"] else 1


def settle(stack, quiet_pct=15.0, timeout=180):
    """Wait until the stack's processes are idle (outbox relays, reporting, autovacuum's analyze of
    the fresh tables) so the window measures the lists, not the tail of the setup."""
    names = ["gateway", "mapping", "reporting", "autotask", "marketplace"]
    pids = {n: stack.pid(n) for n in names}
    deadline = time.monotonic() + timeout
    quiet = 0
    while time.monotonic() < deadline and quiet < 3:
        a = cpu_sample(pids)
        time.sleep(2)
        b = cpu_sample(pids)
        shares = cpu_shares(a, b)
        busy = sum(v for k, v in shares.items() if k.endswith("_pct_of_one_core"))
        quiet = quiet + 1 if busy < quiet_pct else 0
    log(f"  stack settled (services' CPU below {quiet_pct:g}% of a core)" if quiet >= 3
        else "  stack still busy after the settle timeout; measuring anyway")


def notes_for(f):
    size, st, cpu, took = f["size"], f["statuses"], f["cpu"], f["setup"]
    lines_by = ", ".join(f"{k} {v:,}" for k, v in st["lines"].items() if v)
    cust_by = ", ".join(f"{k} {v:,}" for k, v in st["customers"].items() if v)
    via = ("the customer_changed / product_changed / subscription_line_changed events a first full sync "
           "publishes, built with the marketplace service's own validation and change planning and handled by "
           "the mapping service's handlers (the real sync reads ~23,500 subscription details one by one; "
           "either way the mapping service's intake of one tenant, one event at a time under the tenant's "
           "lock, is what takes long)"
           if f["setup_via"] == "events" else "the real marketplace sync (simulator rate limit raised for the setup)")
    return [
        f"One tenant: {size['customers']:,} customers ({cust_by}), {size['lines']:,} subscription lines in "
        f"{size['subscriptions']:,} subscriptions ({lines_by}), {size['products']} products; its PSA (Autotask "
        f"simulator) {size['psa']['companies']:,} companies, {size['psa']['contracts']:,} contracts.",
        f"{f['clients']} closed-loop clients (no think time), each signed in as its own billing user, "
        f"{f['duration_s']:g} s measured after {f['warmup_s']:g} s warm-up. A screen view = one list request of 50 "
        f"rows (default page, search, status tab or a later page drawn over all pages) + the 5 tab counts "
        f"(status=<s>&per_page=1) the portal screens show. Loopback, HTTP/1.1 keep-alive; gateway -> RabbitMQ RPC "
        f"-> mapping service -> PostgreSQL.",
        f"Setup ({took['setup_total_s']:g} s, not measured): marketplace data via {via}: "
        f"{took['mapping_ingest_s']:g} s; PSA connected afterwards (one reference read, "
        f"{took.get('psa_refresh_s', 0):g} s); bulk decisions {f['decisions']} ({took['decisions_s']:g} s). "
        f"Processes: simulators, marketplace, mapping, autotask, gateway (reporting, connectwise, migration not "
        f"started: idle in the window, they only slow the setup).",
        f"CPU during the window (2 cores = 200 %): machine {cpu.get('machine_busy_pct_of_all_cores')} % busy; "
        f"gateway {cpu.get('gateway_pct_of_one_core')} %, mapping service {cpu.get('mapping_pct_of_one_core')} %, "
        f"load driver {cpu.get('load_driver_pct_of_one_core')} % of one core; PostgreSQL, RabbitMQ and anything "
        f"else running take the rest (load average before the run: {f['load_average_before']}).",
        "What limits the figure: a closed loop of 20 clients on 2 cores is CPU-bound (latency ~ clients / "
        "throughput); per request about a third of the CPU is PostgreSQL (the tab counts count the whole "
        "filtered list), the rest the gateway and mapping service (HTTP, session lookup, RPC over RabbitMQ, "
        "JSON). A deep 'later page' of subscription lines is the slowest list (it sorts the keys up to the offset).",
    ]


if __name__ == "__main__":
    sys.exit(main())
