"""What the chaos suite does to a running stack: SIGKILL and restart services by pid, stop/crash and
restart the run's OWN RabbitMQ and PostgreSQL (never the shared pair: every infra command checks the
environment first), inject and clear vendor faults on the simulators. ``Executor`` plays a schedule
(bench/chaos_plan.py) in the background and counts what it did."""
import collections
import os
import pathlib
import signal
import subprocess
import sys
import threading
import time

import requests

from common.secrets import ROOT
from common.topology import SIMULATORS

SHARED_PORTS = {"IDSYNC_PG_PORT": "5433", "IDSYNC_AMQP_PORT": "5673"}
OUTAGE_COMMANDS = {"down", "rmq-stop", "rmq-kill", "rmq-crash", "rmq-restart", "pg-stop", "pg-restart"}


class Ops:
    def __init__(self, stack, log=print):
        self.stack = stack
        self.log = log
        self.env = stack.env
        self._lock = threading.Lock()

    # --- infrastructure (the run's own pair only) ---------------------------------------------------
    def own_pair(self):
        env = self.env
        return bool(env.get("IDSYNC_INFRA_DIR")) and all(env.get(k, d) != d for k, d in SHARED_PORTS.items())

    def infra(self, command, timeout=240, **extra):
        if command in OUTAGE_COMMANDS and not self.own_pair():
            raise RuntimeError(f"refusing `infra.sh {command}`: IDSYNC_INFRA_DIR and the chaos ports are not set, "
                               "this would hit the shared PostgreSQL/RabbitMQ")
        done = subprocess.run(["scripts/infra.sh", command], cwd=ROOT, env={**self.env, **extra},
                              capture_output=True, text=True, timeout=timeout, start_new_session=True)
        if done.returncode != 0:
            self.log(f"  ! infra.sh {command} exited {done.returncode}: {(done.stderr or done.stdout)[-400:]}")
        return done.returncode == 0

    # --- processes ----------------------------------------------------------------------------------
    def pid(self, name):
        path = ROOT / ".run" / self.stack.name / "pids" / f"{name}.pid"
        try:
            pid = int(path.read_text().strip())
        except (OSError, ValueError):
            return None
        try:
            cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
        except OSError:
            return None
        if name in SIMULATORS:   # a pid file may outlive its process: check it is still ours
            wanted = f"-m {SIMULATORS[name][0]} --port {self.stack.port(name)}"
        else:
            wanted = f"-m common.runner {name}"
        return pid if wanted in cmdline else None

    def kill(self, name):
        """SIGKILL the service's process group (started with its own session); returns the pid."""
        pid = self.pid(name)
        if pid is None:
            return None
        try:
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            return None
        for _ in range(50):
            if not pathlib.Path(f"/proc/{pid}").exists():
                break
            time.sleep(0.1)
        return pid

    def start(self, *names, timeout=300):
        """stack.py up --no-seed: starts what is not running, waits until healthy (or gives up)."""
        try:
            done = subprocess.run([sys.executable, "scripts/stack.py", "up", "--no-seed", *names], cwd=ROOT,
                                  env=self.env, capture_output=True, text=True, timeout=timeout,
                                  start_new_session=True)
        except subprocess.TimeoutExpired:
            self.log(f"  ! starting {' '.join(names) or 'the stack'} timed out after {timeout}s")
            return False
        if done.returncode != 0:
            self.log(f"  ! stack.py up {' '.join(names)}: {(done.stderr or done.stdout).strip()[-300:]}")
        return done.returncode == 0

    # --- simulators ---------------------------------------------------------------------------------
    def add_fault(self, sim, rule):
        r = requests.post(self.stack.url(sim, "/_sim/faults"), json=dict(rule), timeout=10)
        r.raise_for_status()
        return r.json()["id"]

    def faults(self, sim):
        return requests.get(self.stack.url(sim, "/_sim/faults"), timeout=10).json()

    def clear_faults(self, sim):
        """Remove every rule; returns how often each fired (by kit kind/status) before it went."""
        fired = collections.Counter()
        try:
            for rule in self.faults(sim):
                fired[_fault_label(rule)] += rule.get("fired", 0)
        except requests.RequestException:
            pass
        requests.delete(self.stack.url(sim, "/_sim/faults"), timeout=10)
        return fired


def _fault_label(rule):
    if rule["kind"] == "status":
        return "429" if rule["status"] == 429 else "5xx"
    return rule["kind"]


class Executor:
    """Plays a schedule in a background thread; every outage runs in its own thread, so a slow
    broker restart never delays the next kill. ``finish()`` waits for the outages to end and
    clears the faults that are still active."""

    def __init__(self, ops, actions, log=print):
        self.ops = ops
        self.actions = actions
        self.log = log
        self.kills = collections.Counter()
        self.restarts = collections.Counter()
        self.infra = collections.Counter()
        self.fired = collections.Counter()
        self.episodes = collections.Counter()
        self.timeline = []            # (t, text) of what actually happened
        self._threads = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._fault_lock = {sim: threading.Lock() for sim in ("sim-marketplace", "sim-autotask", "sim-connectwise")}
        self.started = None

    def note(self, text):
        t = time.time() - self.started
        with self._lock:
            self.timeline.append((round(t, 1), text))
        self.log(f"  [t+{t:5.1f}s] {text}")

    def start(self):
        self.started = time.time()
        main = threading.Thread(target=self._run, name="chaos-executor", daemon=True)
        main.start()
        self._threads.append(main)

    def _run(self):
        for action in self.actions:
            wait = self.started + action.at - time.time()
            if wait > 0 and self._stop.wait(wait):
                return
            th = threading.Thread(target=self._guarded, args=(action,), name=f"chaos-{action.kind}", daemon=True)
            th.start()
            with self._lock:
                self._threads.append(th)

    def _guarded(self, action):
        try:
            getattr(self, f"_do_{action.kind}")(action)
        except Exception as exc:  # noqa: BLE001 - one failed action must not end the run
            self.note(f"! {action.kind} {action.target} failed: {type(exc).__name__}: {exc}")

    def _sleep(self, seconds):
        self._stop.wait(seconds)   # a stopped run still restarts what it took down: only shorter

    def _do_kill(self, action):
        pid = self.ops.kill(action.target)
        if pid is None:
            self.note(f"{action.target} not running: nothing to kill")
            return
        with self._lock:
            self.kills[action.target] += 1
        self.note(f"SIGKILL {action.target} (pid {pid})")
        self._sleep(action.p["down"])
        ok = self.ops.start(action.target)
        with self._lock:
            self.restarts[action.target] += 1
        self.note(f"{action.target} restarted{'' if ok else ' (not healthy yet)'}")

    def _do_rmq(self, action):
        mode = action.p["mode"]
        self.note(f"RabbitMQ {mode} for {action.p['down']}s")
        self.ops.infra("rmq-kill" if mode == "kill" else "rmq-stop")
        with self._lock:
            self.infra[f"rabbitmq_{mode}"] += 1
        self._sleep(action.p["down"])
        ok = self.ops.infra("rmq-start")
        self.note(f"RabbitMQ up again{'' if ok else ' (FAILED)'}")

    def _do_pg(self, action):
        mode = action.p["mode"]
        self.note(f"PostgreSQL stop -m {mode} for {action.p['down']}s")
        self.ops.infra("pg-stop", IDSYNC_PG_STOP_MODE=mode)
        with self._lock:
            self.infra[f"postgresql_{mode}"] += 1
        self._sleep(action.p["down"])
        ok = self.ops.infra("pg-start")
        self.note(f"PostgreSQL up again{'' if ok else ' (FAILED)'}")

    def _do_fault(self, action):
        sim, p = action.target, action.p
        with self._fault_lock[sim]:        # one episode per simulator at a time
            self.ops.add_fault(sim, p["rule"])
            with self._lock:
                self.episodes[p["label"]] += 1
            self.note(f"{sim}: {p['label']} on")
            self._sleep(p["duration"])
            fired = self.ops.clear_faults(sim)
            with self._lock:
                self.fired.update(fired)
            self.note(f"{sim}: {p['label']} off (fired {sum(fired.values())}x)")

    def finish(self, timeout=240):
        """Stop playing; wait for the outages in progress to end (their restarts run at once)."""
        self._stop.set()
        deadline = time.time() + timeout
        with self._lock:
            threads = list(self._threads)
        for th in threads:
            th.join(max(0.1, deadline - time.time()))
        for sim in self._fault_lock:
            try:
                with self._fault_lock[sim]:
                    fired = self.ops.clear_faults(sim)
                with self._lock:
                    self.fired.update(fired)
            except requests.RequestException as exc:
                self.log(f"  ! could not clear the faults of {sim}: {exc}")
        return not any(th.is_alive() for th in threads)
