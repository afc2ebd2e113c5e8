"""Start, stop and inspect the product's processes (simulators, six services, gateway) by pid.

python scripts/stack.py up|down|status [--no-seed]
Each process logs JSON lines to .run/logs/<name>.jsonl; its pid is in .run/pids/<name>.pid.
`down` stops exactly the pids `up` recorded (and checks each is still ours before signalling).
"""
import argparse
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

# IDSYNC_STACK names a separate set of pids and logs (the tests run a "test" stack beside "dev")
STACK = os.environ.get("IDSYNC_STACK", "dev")
RUN = ROOT / ".run"
PIDS = RUN / STACK / "pids"
LOGS = RUN / STACK / "logs"
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
    if pid_of(name):
        return False
    cmd, _ = command_for(name)
    LOGS.mkdir(parents=True, exist_ok=True)
    PIDS.mkdir(parents=True, exist_ok=True)
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


def up(seed=True, names=None):
    env = dict(os.environ)
    env.update(ensure_secrets())
    env.setdefault("IDSYNC_DB_NAME", "idsync")
    names = names or ORDER
    started = [n for n in names if start(n, env)]
    wait_healthy(names, timeout=120)
    if started:
        print(f"started: {', '.join(started)}")
    if seed:
        subprocess.run([PY, "-m", "gateway.seed_demo"], cwd=ROOT, env=env, check=True)


def down(names=None):
    for name in reversed(names or ORDER):
        pid = stop(name)
        if pid:
            print(f"stopped {name} (pid {pid})")


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
    return 0 if all(r["state"] == "healthy" for r in rows) else 1


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("action", choices=["up", "down", "status", "json-status"])
    parser.add_argument("--no-seed", action="store_true")
    parser.add_argument("names", nargs="*")
    args = parser.parse_intermixed_args()  # `up --no-seed autotask` as well as `up autotask --no-seed`
    if args.action == "up":
        up(seed=not args.no_seed, names=args.names or None)
    elif args.action == "down":
        down(args.names or None)
    elif args.action == "json-status":
        print(json.dumps({n: pid_of(n) for n in ORDER}))
    else:
        sys.exit(status())


if __name__ == "__main__":
    main()
