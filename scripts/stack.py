"""Start, stop and inspect the product's processes (simulators, six services, gateway) by pid.

python scripts/stack.py up|down|status [--no-seed] [--keep] [names]
Each process logs JSON lines to .run/<stack>/logs/<name>.jsonl; its pid is in .run/<stack>/pids/.
`down` stops exactly the pids `up` recorded (and checks each is still ours before signalling).
`up --keep` (what `make up` runs) also leaves a keeper that starts again a process that exits
(scripts/keeper.py); `down` stops the keeper first, `down <name>` tells it to leave <name> alone,
`unkeep` stops only the keeper.
"""
import argparse
import fcntl
import json
import os
import pathlib
import signal
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from common.secrets import ensure_secrets  # noqa: E402
from common.topology import SERVICES, SIMULATORS, http_port  # noqa: E402
from scripts.keeper import Keeper, clear_marks, json_log, mark_stopped, reap_children  # noqa: E402

# IDSYNC_STACK names a separate set of pids and logs (the tests run a "test" stack beside "dev")
STACK = os.environ.get("IDSYNC_STACK", "dev")
RUN = ROOT / ".run"
PIDS = RUN / STACK / "pids"
LOGS = RUN / STACK / "logs"
KEEPER_PID = RUN / STACK / "keeper.pid"
MARKS = RUN / STACK / "stopped"   # processes stopped on purpose: the keeper leaves them alone
PY = sys.executable
# consumers declare their queues before anything can publish to them: backends first, gateway last
ORDER = list(SIMULATORS) + [s for s in SERVICES if s != "gateway"] + ["gateway"]


def command_for(name):
    port = http_port(name)
    if name in SIMULATORS:
        return [PY, "-m", SIMULATORS[name][0], "--port", str(port)], f"http://127.0.0.1:{port}/_sim/health"
    return [PY, "-m", "common.runner", name], f"http://127.0.0.1:{port}/health"


def pid_of(name):
    path = PIDS / f"{name}.pid"
    if not path.exists():
        return None
    try:
        pid = int(path.read_text().strip())
    except ValueError:
        return None
    return pid if _ours(pid, name) else None


def _ours(pid, name):
    """Alive, and still the process we started (pids get reused)."""
    try:
        cmdline = (pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")).decode()
    except OSError:
        return False
    wanted = command_for(name)[0][2:4]
    return all(part in cmdline for part in wanted)


def health(url, timeout=2.0):
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=timeout) as r:
            return r.status
    except Exception as exc:  # noqa: BLE001 - any failure means "not healthy"
        return getattr(exc, "code", None) or 0


def start(name, env):
    cmd, _ = command_for(name)
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
    # `up` and the keeper may both find a process gone at the same moment: one of them starts it
    with open(PIDS / ".start.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if pid_of(name):
            return False
        log = open(LOGS / f"{name}.jsonl", "ab")
        proc = subprocess.Popen(cmd, cwd=ROOT, env={**env, "IDSYNC_PROCESS_NAME": name}, stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
        (PIDS / f"{name}.pid").write_text(str(proc.pid))
    return True


def wait_healthy(names, timeout):
    deadline = time.time() + timeout
    pending = set(names)
    while pending and time.time() < deadline:
        for name in sorted(pending):
            if health(command_for(name)[1]) == 200:
                pending.discard(name)
            elif not pid_of(name):
                tail = (LOGS / f"{name}.jsonl").read_text(errors="replace").splitlines()[-15:]
                raise SystemExit(f"{name} exited during start-up; last log lines:\n" + "\n".join(tail))
        time.sleep(0.5)
    if pending:
        raise SystemExit(f"not healthy after {timeout}s: {', '.join(sorted(pending))} (see .run/logs/)")


def stop(name, grace=15):
    pid = pid_of(name)
    path = PIDS / f"{name}.pid"
    if pid:
        os.killpg(pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and _ours(pid, name):
            time.sleep(0.2)
        if _ours(pid, name):
            os.killpg(pid, signal.SIGKILL)
    path.unlink(missing_ok=True)
    return pid


def up(seed=True, names=None, keep=False):
    env = dict(os.environ)
    env.update(ensure_secrets())
    env.setdefault("IDSYNC_DB_NAME", "idsync")
    clear_marks(MARKS, names or None)   # asked to run: no longer stopped on purpose
    names = names or ORDER
    started = [n for n in names if start(n, env)]
    wait_healthy(names, timeout=120)
    if started:
        print(f"started: {', '.join(started)}")
    if keep and start_keeper(env):
        print(f"keeper started: a process that exits is started again (log {LOGS / 'keeper.jsonl'})")
    if seed:
        subprocess.run([PY, "-m", "gateway.seed_demo"], cwd=ROOT, env=env, check=True)


def down(names=None):
    if names:
        mark_stopped(MARKS, names)
    else:
        stop_keeper()
    for name in reversed(names or ORDER):
        pid = stop(name)
        if pid:
            print(f"stopped {name} (pid {pid})")
    if not names:
        clear_marks(MARKS)


# --- the keeper (scripts/keeper.py): make up's restart policy ------------------------------------
class PidFiles:
    """The keeper's view of the stack: the same pid files as up/down."""

    def running(self, name):
        return pid_of(name) is not None

    def start(self, name):
        start(name, dict(os.environ))


def keeper_pid():
    try:
        pid = int(KEEPER_PID.read_text().strip())
        cmdline = pathlib.Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except (OSError, ValueError):
        return None
    return pid if "stack.py keeper" in cmdline else None


def start_keeper(env):
    if keeper_pid():
        return False
    LOGS.mkdir(parents=True, exist_ok=True)
    log = open(LOGS / "keeper.out", "ab")
    proc = subprocess.Popen([PY, str(ROOT / "scripts" / "stack.py"), "keeper"], cwd=ROOT, env=env, stdout=log,
                            stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, start_new_session=True)
    KEEPER_PID.write_text(str(proc.pid))
    return True


def stop_keeper(grace=10):
    pid = keeper_pid()
    if pid:
        os.kill(pid, signal.SIGTERM)
        deadline = time.time() + grace
        while time.time() < deadline and keeper_pid():
            time.sleep(0.1)
        if keeper_pid():
            os.kill(pid, signal.SIGKILL)
        print(f"stopped keeper (pid {pid})")
    KEEPER_PID.unlink(missing_ok=True)


def name_of_pid(pid):
    for path in PIDS.glob("*.pid"):
        if path.read_text().strip() == str(pid):
            return path.stem
    return None


def run_keeper(interval=1.0):
    log = json_log(LOGS / "keeper.jsonl")
    keeper = Keeper(ORDER, PidFiles(), MARKS, log)
    stopping = []
    signal.signal(signal.SIGTERM, lambda *_: stopping.append(True))
    log({"event": "keeper_started", "processes": ORDER})
    while not stopping:
        reap_children(log, name_of_pid)
        keeper.tick(time.time())
        time.sleep(interval)
    log({"event": "keeper_stopped", "restarts": keeper.restarts})


def status():
    rows = []
    for name in ORDER:
        pid = pid_of(name)
        url = command_for(name)[1]
        code = health(url) if pid else None
        rows.append({"process": name, "pid": pid, "health": url, "http": code,
                     "state": "healthy" if code == 200 else ("running" if pid else "stopped")})
    width = max(len(r["process"]) for r in rows)
    for r in rows:
        print(f"{r['process']:<{width}}  {r['state']:<8}  pid {str(r['pid'] or '-'):<8} {r['health']}")
    kp = keeper_pid()
    print(f"{'keeper':<{width}}  {'on' if kp else 'off':<8}  pid {str(kp or '-'):<8} "
          f"{'restarts a process that exits; log ' + str(LOGS / 'keeper.jsonl') if kp else 'nothing is restarted'}")
    return 0 if all(r["state"] == "healthy" for r in rows) else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["up", "down", "status", "json-status", "keeper", "unkeep"])
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("--keep", action="store_true", help="leave a keeper that restarts what exits")
    parser.add_argument("names", nargs="*")
    args = parser.parse_intermixed_args()  # `up --no-seed autotask` as well as `up autotask --no-seed`
    if args.action == "up":
        up(seed=not args.no_seed, names=args.names or None, keep=args.keep)
    elif args.action == "down":
        down(args.names or None)
    elif args.action == "keeper":
        run_keeper()
    elif args.action == "unkeep":
        stop_keeper()
    elif args.action == "json-status":
        print(json.dumps({n: pid_of(n) for n in ORDER}))
    else:
        sys.exit(status())


if __name__ == "__main__":
    main()
