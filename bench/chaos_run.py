"""The chaos suite's runs (bench/chaos.py is the command; this module is imported only after the
run's own ports are in the environment)."""
import collections
import json
import threading
import time
import traceback

import requests
from sqlalchemy import select

from bench import chaos_check as check
from bench import chaos_plan, results, tenants
from bench.chaos_drive import Driver
from bench.chaos_ops import Executor, Ops
from bench.harness import BenchStack
from common.topology import SERVICES

STACK_SERVICES = list(SERVICES)


def log(text=""):
    print(text, flush=True)


class Suite:
    def __init__(self, args, prof, chaos_env):
        self.args = args
        self.prof = prof
        self.stack = BenchStack(prof["name"], offset=prof["offset"], extra_env=chaos_env)
        self.ops = Ops(self.stack, log)
        self.records = []

    # --- the whole suite ------------------------------------------------------------------------
    def run(self):
        a, p = self.args, self.prof
        if not self.ops.own_pair():
            raise SystemExit("the chaos suite needs its own PostgreSQL/RabbitMQ pair (IDSYNC_INFRA_DIR, ports)")
        log(f"chaos: {a.runs} run(s) from seed {a.seed}; {a.chaos_seconds:.0f}s of chaos + up to "
            f"{a.quiet_seconds:.0f}s to converge each; {a.autotask} Autotask + {a.connectwise} ConnectWise tenants "
            f"x {a.lines} lines; own PostgreSQL :{p['pg']} + RabbitMQ :{p['amqp']} ({p['infra_dir']}), "
            f"stack '{p['name']}' at +{p['offset']}; logs .run/{p['name']}/logs/")
        started, interrupted = time.time(), False
        try:
            self.fresh_stack()
            for i in range(a.runs):
                if a.fresh and i:
                    self.fresh_stack()
                record = self.one_run(i, a.seed + i)
                self.records.append(record)
                self.print_record(record)
        except KeyboardInterrupt:   # Ctrl-C / SIGTERM: clean up, keep what the finished runs showed
            interrupted = True
            log(f"interrupted after {len(self.records)} run(s)")
        finally:
            self.teardown()
        figures, table = self.summarise(time.time() - started)
        if interrupted:
            figures["interrupted"] = True
            table["notes"].append(f"interrupted after {len(self.records)} of {a.runs} runs")
        if a.json_out:
            with open(a.json_out, "w") as fh:
                json.dump(figures, fh, indent=2, default=str)
        if not a.no_results and self.records:
            md = results.write("chaos", figures, table["rows"], table["headers"], table["notes"])
            log(md)
        ok = all(r["ok"] for r in self.records) and len(self.records) == a.runs
        log(f"chaos: {sum(r['ok'] for r in self.records)}/{a.runs} run(s) kept every invariant")
        return ok

    def teardown(self):
        a, t0 = self.args, time.time()
        if a.fast_teardown:   # a throw-away stack: no graceful stop needed
            for name in STACK_SERVICES + list(chaos_plan.SIMULATORS):
                self.ops.kill(name)
        self.stack.stop()
        if not a.keep_infra:
            if a.fast_teardown:   # the pair's data is throw-away too: crash-stop it (seconds, not tens)
                self.ops.infra("rmq-kill")
            self.ops.infra("down", IDSYNC_PG_STOP_MODE="immediate" if a.fast_teardown else "fast")
        log(f"stopped the stack{'' if a.keep_infra else ' and the run’s PostgreSQL + RabbitMQ'} in "
            f"{time.time() - t0:.0f}s")

    def fresh_stack(self):
        t0 = time.time()
        self.stack.stop()
        self.stack.prepare()
        t1 = time.time()
        self.stack.start()
        log(f"prepared in {time.time() - t0:.0f}s: own PostgreSQL + RabbitMQ up, empty database and vhost "
            f"({t1 - t0:.0f}s), every process up and healthy ({time.time() - t1:.0f}s)")

    # --- one run --------------------------------------------------------------------------------
    def one_run(self, index, seed):
        a = self.args
        log(f"\n== run {index + 1}/{a.runs}  seed {seed}")
        actions = chaos_plan.plan(seed, a.chaos_seconds, kills=a.kills, infra=not a.no_infra,
                                  faults=not a.no_faults,
                                  rmq_modes=[m for m in a.rmq_modes.split(",") if m and m != "none"])
        log(f"schedule ({chaos_plan.summary(actions)}):")
        for action in actions:
            log(f"  {action.describe()}")
        record = {"run": index + 1, "seed": seed, "ok": False, "phase": "setup"}
        try:
            self.ensure_up()
            for sim in ("sim-autotask", "sim-connectwise"):
                requests.delete(self.stack.url(sim, "/_sim/writes"), timeout=30)
            for sim in chaos_plan.SIMULATORS:
                self.ops.clear_faults(sim)
            t0 = time.time()
            run_tenants = (tenants.provision(self.stack, a.autotask, psa="autotask", customers=a.customers,
                                             lines_per_tenant=a.lines, seed=seed * 10, prefix=f"c{seed}r{index}at")
                           + tenants.provision(self.stack, a.connectwise, psa="connectwise", customers=a.customers,
                                               lines_per_tenant=a.lines, seed=seed * 10 + 5,
                                               prefix=f"c{seed}r{index}cw"))
            tenants.map_all(self.stack, run_tenants, timeout=a.setup_timeout)
            record["setup_seconds"] = round(time.time() - t0, 1)
            log(f"{len(run_tenants)} tenants provisioned and mapped in {record['setup_seconds']}s")
            baseline = self.evaluate(run_tenants, set())
            if any(r["wrong"] for r in baseline["per"].values()):
                log("  ! before any chaos the PSAs already differ from the marketplace:")
                self.print_findings(baseline)
            elif not baseline["converged"]:
                log(f"  (before the chaos: {baseline['why']})")
            record["phase"] = "chaos"
            record.update(self.chaos(run_tenants, seed, actions))
            record["phase"] = "quiet"
            record.update(self.quiet(run_tenants, record))
            record["phase"] = "done"
        except Exception as exc:  # noqa: BLE001 - a run that could not finish is a failed run
            traceback.print_exc()
            record["error"] = f"{type(exc).__name__}: {exc}"
        return record

    def ensure_up(self, within=180):
        """Start what is not running, again and again until it is (bounded): what Kubernetes does
        for a pod that exited. `stack.py up` itself fails while RabbitMQ is still booting."""
        self.ops.infra("up")
        deadline = time.time() + within
        while not self.ops.start() and time.time() < deadline:
            time.sleep(3)

    def revive(self, exited):
        """Restart services that exited on their own (not killed by the run), as the orchestrator
        would, and count them: a nameko service whose RPC answer cannot be published (the broker is
        away) stops its container and the process exits (docs/chaos.md, finding 4)."""
        gone = [name for name in STACK_SERVICES if self.ops.pid(name) is None]
        if gone:
            log(f"  restarting {', '.join(gone)}: exited on their own")
            exited.update(gone)
            self.ops.start(*gone)

    # --- chaos phase ------------------------------------------------------------------------------
    def chaos(self, run_tenants, seed, actions):
        a = self.args
        driver = Driver(self.stack, run_tenants, seed, rate=a.rate, cooldown=a.cooldown, log=log)
        executor = Executor(self.ops, actions, log=log)
        stop = threading.Event()
        accepted = collections.Counter()
        person = threading.Thread(target=self.billing_person, args=(run_tenants, stop, accepted), daemon=True)
        log(f"chaos for {a.chaos_seconds:.0f}s")
        driver.start()
        executor.start()
        person.start()
        time.sleep(a.chaos_seconds)
        driver.stop()
        log(f"chaos over: {len(driver.changes)} marketplace changes {dict(driver.counts)}; waiting for outages to end")
        finished = executor.finish()
        stop.set()
        person.join(30)
        self.driver = driver
        self.executor = executor
        return {"changes": len(driver.changes), "change_kinds": dict(driver.counts), "driver_errors": driver.errors[:5],
                "kills": dict(executor.kills), "restarts": dict(executor.restarts), "infra": dict(executor.infra),
                "fault_episodes": dict(executor.episodes), "faults_fired": dict(executor.fired),
                "timeline": executor.timeline, "accepted_during_chaos": sum(accepted.values()),
                "outages_ended": finished}

    def billing_person(self, run_tenants, stop, accepted, every=10.0):
        """A billing manager accepting the contract suggestions of new lines now and then."""
        while not stop.wait(every):
            accepted.update(self.accept_suggestions(run_tenants, quiet=True))

    def accept_suggestions(self, run_tenants, quiet=False):
        from services.mapping import models as mm

        ids = [t.tenant_id for t in run_tenants]
        done = collections.Counter()
        try:
            with self.stack.engine("mapping").connect() as conn:
                pending = {r.tenant_id for r in conn.execute(
                    select(mm.line_links.c.tenant_id).where(mm.line_links.c.tenant_id.in_(ids),
                                                           mm.line_links.c.status == "suggested").distinct())}
            if not pending:
                return done
            with self.stack.rpc(timeout=30) as rpc:
                for tid in pending:
                    done[tid] += rpc.mapping.bulk(tid, "line", "accept")["changed"]
        except Exception as exc:  # noqa: BLE001 - chaos: the broker or the database may be away
            self.reset_connections()
            if not quiet:
                log(f"  (accepting suggestions failed: {type(exc).__name__})")
        return done

    # --- quiet phase: converge, then the invariants -------------------------------------------------
    def quiet(self, run_tenants, record):
        a = self.args
        ended = time.time()
        deadline = ended + a.quiet_seconds
        self.ensure_up()
        for sim in chaos_plan.SIMULATORS:
            self.ops.clear_faults(sim)
        log(f"quiet: everything up {time.time() - ended:.1f}s after the chaos; converging (deadline {a.quiet_seconds:.0f}s)")
        dead_letters, retried_dead, converged_at, last, shown = [], 0, None, None, time.time()
        exited = collections.Counter()
        while time.time() < deadline:
            self.revive(exited)
            self.accept_suggestions(run_tenants)
            dead_letters += self.replay_dead_letters()
            retried_dead += self.retry_dead_postings(run_tenants)
            try:
                last = self.evaluate(run_tenants, self.driver.touched)
            except Exception as exc:  # noqa: BLE001 - a reading failed (a process still starting): next round
                log(f"  (reading failed: {type(exc).__name__}: {str(exc)[:200]})")
                self.reset_connections()
                time.sleep(3)
                continue
            if last["converged"]:
                if converged_at is None:
                    converged_at = time.time()
                    log(f"  converged {converged_at - ended:.1f}s after the chaos; confirming")
                elif time.time() - converged_at >= a.confirm_seconds:
                    break
            else:
                if converged_at is not None:
                    log("  diverged again after converging: " + last["why"])
                converged_at = None
                if time.time() - shown >= 20:
                    shown = time.time()
                    stages = collections.Counter(w["stage"] for r in last["per"].values() for w in r["wrong"])
                    log(f"  [{time.time() - ended:5.0f}s] {last['why']}" + (f"; where: {dict(stages)}" if stages else ""))
            time.sleep(3)
        t0 = time.time()
        final = self.evaluate(run_tenants, self.driver.touched, full=True)
        dead_letters += self.replay_dead_letters()
        out = {"converged": converged_at is not None and final["converged"],
               "converge_seconds": round(converged_at - ended, 1) if converged_at else None,
               "dead_letters": dead_letters, "dlq": len(dead_letters),
               "dlq_unexplained": sum(1 for d in dead_letters if not d["explanation"]),
               "dead_postings_retried": retried_dead, "exited_and_restarted": dict(exited), **final["figures"]}
        out["findings"] = final["findings"]
        out["check_seconds"] = round(time.time() - t0, 1)
        out["ok"] = (out["converged"] and out["lost"] == 0 and out["doubled"] == 0 and out["phantom"] == 0
                     and out["wrong_lines"] == 0 and out["held"] == 0 and out["journal_gaps"] == 0
                     and out["dlq_unexplained"] == 0 and out["queued"] == 0)
        if not out["converged"] and last is not None:
            log(f"  ! not converged within {a.quiet_seconds:.0f}s: {last['why']}")
        return out

    def reset_connections(self):
        """Our own pooled connections died with PostgreSQL: drop them."""
        for engine in self.stack._engines.values():
            engine.dispose()

    def evaluate(self, run_tenants, touched, full=False):
        """Every invariant that can be read without disturbing anything; ``full`` adds the write logs,
        reporting's journal and the queues."""
        ids = [t.tenant_id for t in run_tenants]
        mapping = check.mapping_view(self.stack, ids)
        mcopy = check.marketplace_copy(self.stack, ids)
        groups, ledger = {}, {}
        for psa in ("autotask", "connectwise"):
            mine = [t.tenant_id for t in run_tenants if t.psa == psa]
            if mine:
                g, led = check.posting_view(self.stack, psa, mine)
                groups.update(g)
                ledger.update(led)
        per = {t.tenant_id: check.check_tenant(self.stack, t, mapping[t.tenant_id], mcopy[t.tenant_id], groups,
                                               ledger, touched) for t in run_tenants}
        busy = [k for k, g in groups.items() if g["due_at"] is not None or g["lease_owner"] is not None]
        wrong = sum(len(r["wrong"]) for r in per.values())
        open_rows = sum(r["open"] for r in per.values())
        pending = check.outbox_pending(self.stack)
        queued = {q: n for q, n in check.queue_depths(self.stack).items()}
        why = []
        if wrong:
            why.append(f"{wrong} contract line(s) differ from the marketplace")
        if open_rows:
            why.append(f"{open_rows} ledger row(s) open")
        if busy:
            why.append(f"{len(busy)} line(s) due or leased")
        if pending:
            why.append(f"outbox not empty {pending}")
        if queued:
            why.append(f"messages queued {queued}")
        out = {"converged": not why, "why": "; ".join(why) or "ok", "per": per}
        if not full:
            return out
        writes = check.applied_once(self.stack, run_tenants, per, ledger)
        gaps, unsent = check.journal_gaps(self.stack, ids)
        figures = {
            "tenants": len(run_tenants), "lines": sum(r["lines"] for r in per.values()),
            "contract_lines": sum(r["contract_lines"] for r in per.values()),
            "wrong_lines": wrong, "schedule_wrong": sum(len(r["schedule_wrong"]) for r in per.values()),
            "desired_wrong": sum(len(r["desired_wrong"]) for r in per.values()),
            "lost": sum(len(r["lost"]) for r in per.values()),
            "doubled": sum(w["doubled"] for w in writes), "phantom": sum(w["phantom"] for w in writes),
            "writes_applied": sum(w["applied"] for w in writes), "held": sum(r["held"] for r in per.values()),
            "dead_postings": sum(r["dead"] for r in per.values()), "open_postings": open_rows,
            "not_billable": sum(len(r["not_billable"]) for r in per.values()),
            "journal_gaps": sum(sum(c.values()) for c in gaps.values()), "outbox_unsent": sum(unsent.values()),
            "queued": sum(queued.values()),
        }
        findings = {"per_tenant": {r["tenant"]: {k: r[k] for k in ("wrong", "schedule_wrong", "desired_wrong", "lost",
                                                                    "not_billable", "ledger")}
                                   for r in per.values()},
                    "writes": writes, "journal_gaps": {k: dict(v) for k, v in gaps.items()}, "queued": queued,
                    "unsent": unsent}
        out.update(figures=figures, findings=findings)
        return out

    def replay_dead_letters(self):
        """List every dead letter of the run's vhost, explain it, replay it. -> [record]"""
        try:
            depths = check.queue_depths(self.stack)
        except requests.RequestException:
            return []
        owners = sorted({q.split("--", 1)[1].split(".", 1)[0] for q, n in depths.items()
                         if q.endswith(".dead") and n and "--" in q})
        found = []
        for service in owners:
            try:
                with self.stack.rpc(timeout=60) as rpc:
                    proxy = getattr(rpc, service)
                    items = proxy.dead_letters(1000)
                    for d in items:
                        payload = d.get("payload") or {}
                        queue = d.get("queue") or ""
                        # queues are named evt-<source>-<event type>--<service>.<handler>
                        etype = payload.get("event_type") or (queue.split("--", 1)[0].split("-", 2)[-1]
                                                              if queue.startswith("evt-") else None)
                        item = {"service": service, "queue": queue, "event_id": d.get("event_id"),
                                "event_type": etype, "attempts": d.get("attempts"),
                                "error": " ".join((d.get("error") or "").split())[:300],
                                "explanation": check.explain(d, getattr(self, "executor", None).timeline
                                                             if getattr(self, "executor", None) else [])}
                        found.append(item)
                        log(f"  dead letter {service} {item['queue']} {item['event_type']} {item['event_id']} after "
                            f"{item['attempts']} attempt(s): {item['error'][:160]} -> "
                            f"{item['explanation'] or 'UNEXPLAINED'}")
                    replayed = proxy.replay_dead_letters(1000)
                    log(f"  replayed {replayed} dead letter(s) of {service}")
            except Exception as exc:  # noqa: BLE001 - next round
                log(f"  (dead letters of {service} not handled yet: {type(exc).__name__}: {exc})")
        return found

    def retry_dead_postings(self, run_tenants):
        """Dead ledger rows (the vendor refused them max_attempts times) get the portal's retry."""
        n = 0
        for psa in ("autotask", "connectwise"):
            mine = [t.tenant_id for t in run_tenants if t.psa == psa]
            if not mine:
                continue
            try:
                _, ledger = check.posting_view(self.stack, psa, mine)
                for tid, rows in ledger.items():
                    dead = [r["id"] for r in rows if r["state"] == "dead"]
                    if dead:
                        with self.stack.rpc(timeout=30) as rpc:
                            n += getattr(rpc, psa).retry(tid, dead)["retried"]
                        log(f"  retried {len(dead)} dead posting(s) of a {psa} tenant (the portal's retry)")
            except Exception as exc:  # noqa: BLE001
                log(f"  (retrying dead postings failed: {type(exc).__name__})")
                self.reset_connections()
        return n

    # --- output ---------------------------------------------------------------------------------
    def print_findings(self, evaluation):
        for r in evaluation["per"].values():
            for w in r["wrong"][:10]:
                log(f"    {r['tenant']} {w}")

    def print_record(self, r):
        log(f"-- run {r['run']} seed {r['seed']}: {'OK' if r['ok'] else 'FAILED'}")
        if "error" in r:
            log(f"   error in phase {r['phase']}: {r['error']}")
            return
        if r.get("phase") != "done":
            return
        log(f"   changes {r['changes']} {r['change_kinds']}; kills {r['kills']}; infra {r['infra']}; "
            f"faults fired {r['faults_fired']}")
        log(f"   invariant 1 (PSA == desired): {r['wrong_lines']} of {r['contract_lines']} contract lines wrong at the "
            f"horizon; {r['schedule_wrong']} differ from the posting schedule today; {r['desired_wrong']} desired "
            f"schedules (mapping's or the PSA service's) end elsewhere than the marketplace says")
        log(f"   invariant 2 (applied once): {r['writes_applied']} vendor writes, doubled {r['doubled']}, "
            f"posted-but-not-applied {r['phantom']}; held as 'edited in PSA' {r['held']}")
        log(f"   invariant 3 (nothing lost): lost {r['lost']} of the changed lines; events missing from reporting's "
            f"journal {r['journal_gaps']}; outbox unsent {r['outbox_unsent']}")
        log(f"   invariant 4 (dead letters): {r['dlq']} dead-lettered ({r['dlq_unexplained']} unexplained), all "
            f"replayed; {r['queued']} message(s) still queued; dead postings retried {r['dead_postings_retried']}")
        log(f"   converged: {'in %ss after the chaos' % r['converge_seconds'] if r['converged'] else 'NO'}"
            + (f"; restarted after exiting on their own: {r['exited_and_restarted']}"
               if r.get("exited_and_restarted") else ""))
        findings = r.get("findings") or {}
        for tenant, f in (findings.get("per_tenant") or {}).items():
            for kind in ("wrong", "schedule_wrong", "desired_wrong", "lost", "not_billable"):
                for item in f[kind][:8]:
                    log(f"   ! {tenant} {kind}: {item}")
        for w in findings.get("writes") or []:
            if w["doubled"] or w["phantom"]:
                log(f"   ! writes {w}")
        if findings.get("journal_gaps"):
            log(f"   ! journal gaps {findings['journal_gaps']}")

    def summarise(self, elapsed):
        recs = self.records
        done = [r for r in recs if r.get("phase") == "done"]

        def total(key):
            c = collections.Counter()
            for r in recs:
                c.update(r.get(key) or {})
            return dict(c)
        converge = [r["converge_seconds"] for r in done if r.get("converge_seconds") is not None]
        figures = {
            "runs": len(recs), "runs_ok": sum(r["ok"] for r in recs), "first_seed": self.args.seed,
            "seconds": round(elapsed), "chaos_seconds": self.args.chaos_seconds,
            "quiet_seconds": self.args.quiet_seconds,
            "tenants_per_run": {"autotask": self.args.autotask, "connectwise": self.args.connectwise},
            "changes": sum(r.get("changes", 0) for r in recs), "change_kinds": total("change_kinds"),
            "faults_fired": total("faults_fired"), "fault_episodes": total("fault_episodes"),
            "kills": total("kills"), "restarts": total("restarts"), "infra_outages": total("infra"),
            "lost": sum(r.get("lost", 0) for r in done), "doubled": sum(r.get("doubled", 0) for r in done),
            "phantom": sum(r.get("phantom", 0) for r in done), "wrong_lines": sum(r.get("wrong_lines", 0) for r in done),
            "held": sum(r.get("held", 0) for r in done), "journal_gaps": sum(r.get("journal_gaps", 0) for r in done),
            "dlq": sum(r.get("dlq", 0) for r in done), "dlq_unexplained": sum(r.get("dlq_unexplained", 0) for r in done),
            "dead_postings_retried": sum(r.get("dead_postings_retried", 0) for r in done),
            "exited_and_restarted": dict(sum((collections.Counter(r.get("exited_and_restarted") or {})
                                              for r in done), collections.Counter())),
            "converge_seconds": {"p50": results.percentile(converge, 50), "max": max(converge) if converge else None},
            "not_converged": sum(1 for r in done if not r.get("converged")),
            "errors": [f"run {r['run']} (seed {r['seed']}): {r['error']}" for r in recs if "error" in r],
            "dead_letters": [{"run": r["run"], **{k: d[k] for k in ("service", "event_type", "attempts", "error",
                                                                      "explanation")}}
                             for r in done for d in r.get("dead_letters") or []],
            "per_run": [{k: v for k, v in r.items() if k not in ("findings", "timeline", "dead_letters")} for r in recs],
        }
        headers = ["run", "seed", "changes", "kills", "rmq/pg outages", "faults fired", "lost", "doubled",
                   "wrong lines", "DLQ", "converge s", "ok"]
        rows = []
        for r in recs:
            rows.append([r["run"], r["seed"], r.get("changes", "-"), sum((r.get("kills") or {}).values()),
                         sum((r.get("infra") or {}).values()), sum((r.get("faults_fired") or {}).values()),
                         r.get("lost", "-"), r.get("doubled", "-"), r.get("wrong_lines", "-"), r.get("dlq", "-"),
                         r.get("converge_seconds") or "-", "yes" if r["ok"] else "NO"])
        rows.append(["all", "", figures["changes"], sum(figures["kills"].values()),
                     sum(figures["infra_outages"].values()), sum(figures["faults_fired"].values()), figures["lost"],
                     figures["doubled"], figures["wrong_lines"], figures["dlq"],
                     f"p50 {figures['converge_seconds']['p50']} / max {figures['converge_seconds']['max']}",
                     f"{figures['runs_ok']}/{figures['runs']}"])
        notes = [f"each run: {self.args.chaos_seconds:.0f}s of chaos then up to {self.args.quiet_seconds:.0f}s to "
                 f"converge; {self.args.autotask} Autotask + {self.args.connectwise} ConnectWise tenants x "
                 f"{self.args.lines} lines; ~{self.args.rate}/s marketplace changes",
                 f"faults fired by kind: {figures['faults_fired']}; kills: {figures['kills']}; "
                 f"RabbitMQ/PostgreSQL outages: {figures['infra_outages']}",
                 "lost = changed lines not reflected in the PSA; doubled = vendor writes applied more often than "
                 "the ledger posted them; DLQ = dead letters found (each explained and replayed); docs/chaos.md"]
        notes += figures["errors"]
        return figures, {"headers": headers, "rows": rows, "notes": notes}
