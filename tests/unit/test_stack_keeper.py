"""The keeper `make up` leaves beside the stack (scripts/keeper.py): the restart pauses, and one pass
over real processes - one killed, one stopped on purpose, one running."""
import os
import signal
import subprocess
import sys
import time

from scripts.keeper import Keeper, RestartPolicy, clear_marks, mark_stopped, reap_children


def test_a_process_that_keeps_exiting_waits_longer_each_time_up_to_the_cap():
    policy = RestartPolicy(first=1, cap=8, steady=300)
    now, pauses = 1000.0, []
    for _ in range(6):
        due = policy.exited("mapping", now)
        pauses.append(due - now)
        policy.started("mapping", due)
        now = due + 2          # exits again two seconds after each start
    assert pauses == [1, 2, 4, 8, 8, 8]


def test_a_process_that_ran_steadily_starts_over_at_the_first_pause():
    policy = RestartPolicy(first=1, cap=60, steady=300)
    for t in (0, 10, 20):      # three quick exits: 1, 2, 4
        policy.started("autotask", t)
        last = policy.exited("autotask", t + 1) - (t + 1)
    assert last == 4
    policy.started("autotask", 100)
    assert policy.exited("autotask", 100 + 301) - 401 == 1
    assert policy.exited("gateway", 5) == 6   # each process has its own pauses


class SleepingProcesses:
    """Real child processes by name, as stack.py's pid files would give them."""

    def __init__(self, names):
        self.procs = {}
        for name in names:
            self.start(name)

    def start(self, name):
        self.procs[name] = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])

    def running(self, name):
        return self.procs[name].poll() is None

    def stop_all(self):
        for p in self.procs.values():
            p.kill()
            p.wait()


def test_one_pass_starts_again_the_killed_process_after_its_pause_and_leaves_the_others(tmp_path):
    names = ["marketplace", "mapping", "autotask"]
    table = SleepingProcesses(names)
    events = []
    keeper = Keeper(names, table, tmp_path / "stopped", events.append, RestartPolicy(first=1, cap=60))
    try:
        killed = table.procs["mapping"]
        killed.send_signal(signal.SIGKILL)
        killed.wait()
        mark_stopped(tmp_path / "stopped", ["autotask"])
        table.procs["autotask"].kill()
        table.procs["autotask"].wait()
        now = time.time()

        assert keeper.tick(now) == []                     # seen, but its pause is not over
        assert events == [{"event": "process_exited", "process": "mapping", "restart_in_s": 1.0}]
        assert keeper.tick(now + 1.0) == ["mapping"]
        assert table.running("mapping") and table.procs["mapping"].pid != killed.pid
        assert not table.running("autotask")               # stopped on purpose: left alone
        assert keeper.restarts == {"mapping": 1}
        assert events[-1] == {"event": "process_restarted", "process": "mapping", "restarts": 1}

        clear_marks(tmp_path / "stopped", ["autotask"])   # `stack.py up autotask` clears the mark
        keeper.tick(now + 2.0)
        assert keeper.tick(now + 3.0) == ["autotask"] and table.running("autotask")
        assert keeper.tick(now + 4.0) == []               # all running: nothing to do
    finally:
        table.stop_all()


def test_the_exit_status_of_a_child_is_collected_and_logged():
    child = subprocess.Popen([sys.executable, "-c", "raise SystemExit(3)"])
    pid = child.pid
    os.waitid(os.P_PID, pid, os.WEXITED | os.WNOWAIT)   # exited, not yet collected
    events = []
    reap_children(events.append, {pid: "reporting"}.get)
    assert {"event": "child_exit_status", "process": "reporting", "pid": pid, "exit_code": 3} in events
