"""The local stand-in for Kubernetes' restart policy: `make up` leaves a keeper beside the stack that
starts again any process that exits, pausing longer each time the same process keeps exiting.

Why a keeper of our own and not supervisord: the tests, the benches and the chaos suite start the
same processes with `scripts/stack.py` and kill them on purpose by pid; a supervisor owning the
processes would restart them behind those tools' backs. The keeper is only started by `make up`
(`stack.py up --keep`) and works from the same pid files, so everything else is unchanged.

A process stopped on purpose (`stack.py down <name>`) is marked and left alone until `up` again.
"""
from __future__ import annotations

import json
import os
import pathlib
import time
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    """When a process that exited may start again: 1 s after its first exit, then twice as long
    after each exit that follows a short life (crash loop), never more than ``cap``; a process
    that ran ``steady`` seconds starts over at ``first``. Pure: the clock is passed in."""

    first: float = 1.0
    cap: float = 60.0
    steady: float = 300.0
    _pause: dict = field(default_factory=dict)
    _started: dict = field(default_factory=dict)

    def exited(self, name: str, now: float) -> float:
        """Records an exit seen at ``now``; returns when the process may be started again."""
        ran = now - self._started.get(name, float("-inf"))
        previous = self._pause.get(name)
        pause = self.first if previous is None or ran >= self.steady else min(self.cap, previous * 2)
        self._pause[name] = pause
        return now + pause

    def started(self, name: str, now: float) -> None:
        self._started[name] = now


class Keeper:
    """One pass (``tick``) looks at every process: running, stopped on purpose, waiting out its
    pause, or due to start again. ``table`` is what starts and sees processes (stack.py's pid files);
    ``log`` takes one JSON-ready dict per event."""

    def __init__(self, names, table, marks: pathlib.Path, log, policy: RestartPolicy | None = None):
        self.names = list(names)
        self.table = table
        self.marks = marks
        self.log = log
        self.policy = policy or RestartPolicy()
        self.due: dict[str, float] = {}
        self.restarts: dict[str, int] = {}

    def stopped_on_purpose(self, name: str) -> bool:
        return (self.marks / name).exists()

    def tick(self, now: float) -> list[str]:
        """Returns the names started again in this pass."""
        restarted = []
        for name in self.names:
            if self.stopped_on_purpose(name):
                self.due.pop(name, None)
                continue
            if self.table.running(name):
                continue
            if name not in self.due:
                self.due[name] = self.policy.exited(name, now)
                self.log({"event": "process_exited", "process": name,
                          "restart_in_s": round(self.due[name] - now, 1)})
            if now >= self.due[name]:
                self.table.start(name)
                self.policy.started(name, now)
                del self.due[name]
                self.restarts[name] = self.restarts.get(name, 0) + 1
                self.log({"event": "process_restarted", "process": name, "restarts": self.restarts[name]})
                restarted.append(name)
        return restarted


def reap_children(log, name_of=lambda pid: None) -> None:
    """Collects the exit status of processes this keeper started (they would linger as zombies)."""
    while True:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        log({"event": "child_exit_status", "process": name_of(pid), "pid": pid,
             "exit_code": os.waitstatus_to_exitcode(status)})


def json_log(path: pathlib.Path):
    path.parent.mkdir(parents=True, exist_ok=True)

    def log(record):
        line = {"ts": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "logger": "keeper", **record}
        with open(path, "a", encoding="utf-8") as f:
            f.write(json.dumps(line) + "\n")
    return log


def mark_stopped(marks: pathlib.Path, names) -> None:
    marks.mkdir(parents=True, exist_ok=True)
    for name in names:
        (marks / name).touch()


def clear_marks(marks: pathlib.Path, names=None) -> None:
    if not marks.exists():
        return
    for path in marks.iterdir():
        if names is None or path.name in names:
            path.unlink(missing_ok=True)
