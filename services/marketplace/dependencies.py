"""Nameko extensions of the marketplace service: a timer whose interval comes from config, and the
pool that runs claimed sync runs in their own green threads.

A run can last many minutes (the vendor allows ~60 detail reads a minute), so it does not run
inside the timer's worker: the poll timer claims runs and hands them to `SyncRunner`, which runs up
to SYNC_CONCURRENCY of them at once in managed threads and tells them to stop when the service
stops (they end `failed` with "stopped", and the next run resumes).
"""
import logging
import time

import eventlet
from nameko.extensions import DependencyProvider
from nameko.timer import Timer

from services.marketplace.sync import WORKER_ID, SyncSettings

log = logging.getLogger(__name__)


class ConfigTimer(Timer):
    """@ConfigTimer.decorator("SYNC_POLL_SECONDS", 2): a nameko timer whose interval is read from the
    service config at setup (nameko's own takes a constant)."""

    def __init__(self, config_key, default, **kwargs):
        self.config_key, self.default = config_key, default
        super().__init__(interval=default, **kwargs)

    def setup(self):
        value = self.container.config.get(self.config_key, self.default)
        self.interval = float(self.default if value in (None, "") else value)
        super().setup()


config_timer = ConfigTimer.decorator


class SyncRunner(DependencyProvider):
    """What the service's entrypoints see as `self.runner`: settings, free slots, start a run."""

    stop_grace_seconds = 10.0  # scripts/stack.py and Kubernetes allow more before SIGKILL

    def setup(self):
        self.settings = SyncSettings.from_config(self.container.config)
        self.worker_id = WORKER_ID
        self.threads = {}
        self.stopping = False
        self._pruned_at = None

    def get_dependency(self, worker_ctx):
        return self

    def free_slots(self) -> int:
        return 0 if self.stopping else max(0, self.settings.concurrency - len(self.threads))

    def prune_due(self, every_seconds=3600.0) -> bool:
        """True at most once an hour per process: old runs are forgotten now and then, not every tick."""
        now = time.monotonic()
        if self._pruned_at is not None and now - self._pruned_at < every_seconds:
            return False
        self._pruned_at = now
        return True

    def should_stop(self) -> bool:
        return self.stopping

    def launch(self, fn, run_id, *args, **kwargs):
        """Run fn(*args, **kwargs) in a managed thread; fn must not raise (execute_run does not)."""

        def body():
            try:
                fn(*args, **kwargs)
            except Exception:  # an uncaught error would kill the container
                log.exception("sync run %s thread failed", run_id)
            finally:
                self.threads.pop(run_id, None)

        self.threads[run_id] = self.container.spawn_managed_thread(body, identifier=f"sync_run_{run_id}")

    def stop(self):
        self.stopping = True  # runs notice between subscriptions and during waits, and end themselves
        with eventlet.Timeout(self.stop_grace_seconds, False):
            for gt in list(self.threads.values()):
                gt.wait()
        if self.threads:
            log.warning("%d sync run(s) did not stop in %ss; they will be marked abandoned",
                        len(self.threads), self.stop_grace_seconds)

    def kill(self):
        self.stopping = True
        for gt in list(self.threads.values()):
            gt.kill()
