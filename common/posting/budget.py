"""A tenant's PSA request budget and concurrency slots, shared by every replica through PostgreSQL.

Budget: each request adds 1 to the tenant's bucket for the current minute (table request_budget);
the sum of the buckets of the rolling window (one hour) must stay under ``limit`` =
floor(hourly_limit x share). Checking and counting is one statement, so replicas share one count;
concurrent callers may overshoot by at most the number of requests in flight (they read the sum
before each other's increments commit), which the share leaves room for.

Slots: at most ``slots`` requests in flight per (tenant, endpoint key) across every replica,
taken as PostgreSQL session advisory locks (pg_try_advisory_lock(hashtext(key), slot)) on a
connection held for the call. A replica that dies loses its connection and PostgreSQL frees its
slots at once - no lease to expire.

    budget = RequestBudget(engine, tables.budget, "autotask", hourly_limit=10000, share=0.4, slots=3)
    with budget.request(tenant_id, "ContractServiceAdjustments"):
        ...one HTTP call...
Raises BudgetExhausted / SlotUnavailable (both ``NotSent``, with ``retry_after``) before anything
is sent.
"""
import contextlib
import logging
import math
import random
import time

from sqlalchemy import text

from common.posting.metrics import BUDGET_REMAINING
from common.posting.retry import NotSent

log = logging.getLogger(__name__)


class BudgetExhausted(NotSent):
    pass


class SlotUnavailable(NotSent):
    pass


class RequestBudget:
    def __init__(self, engine, table, psa, *, hourly_limit=10_000, share=0.4, window_seconds=3600,
                 slots=3, slot_wait=20.0, sleep=time.sleep):
        self.engine = engine
        self.table = table.name
        self.psa = psa
        self.hourly_limit = int(hourly_limit)
        self.share = float(share)
        self.limit = max(1, int(math.floor(self.hourly_limit * self.share)))
        self.window = float(window_seconds)
        self.slots = int(slots)
        self.slot_wait = float(slot_wait)
        self.sleep = sleep
        self._rng = random.Random()

    # --- budget --------------------------------------------------------------------------------
    def consume(self, tenant_id, n=1, conn=None):
        """Count n requests; returns the requests left. Raises BudgetExhausted (nothing counted).
        ``conn``: an AUTOCOMMIT connection to count on (request() passes the slot's own, saving a
        pool checkout and a transaction per request); default a short transaction of its own."""
        sql = text(f"""
            WITH used AS (
                SELECT coalesce(sum(used), 0) AS n FROM {self.table}
                WHERE tenant_id = :t AND psa = :p AND minute > now() - make_interval(secs => :w))
            INSERT INTO {self.table} AS b (tenant_id, psa, minute, used)
            SELECT :t, :p, date_trunc('minute', now()), :n FROM used WHERE used.n + :n <= :limit
            ON CONFLICT (tenant_id, psa, minute) DO UPDATE SET used = b.used + EXCLUDED.used
            RETURNING (SELECT n FROM used) + :n AS total""")
        params = {"t": tenant_id, "p": self.psa, "w": self.window, "n": int(n), "limit": self.limit}
        if conn is not None:
            total = conn.execute(sql, params).scalar()
        else:
            with self.engine.begin() as own:
                total = own.execute(sql, params).scalar()
        if total is None:
            usage = self.usage(tenant_id)
            BUDGET_REMAINING.labels(self.psa, tenant_id).set(usage["remaining"])
            raise BudgetExhausted(f"{self.psa} request budget of {self.limit} per {int(self.window)} s used up",
                                  retry_after=usage["resets_in"])
        remaining = self.limit - int(total)
        BUDGET_REMAINING.labels(self.psa, tenant_id).set(remaining)
        return remaining

    def usage(self, tenant_id):
        """{limit, used, remaining, window_seconds, resets_in}: resets_in = seconds until the oldest
        counted minute leaves the window (1 when nothing is counted)."""
        sql = text(f"""
            SELECT coalesce(sum(used), 0) AS used,
                   extract(epoch FROM (min(minute) + make_interval(secs => :w) - now())) AS resets_in
            FROM {self.table}
            WHERE tenant_id = :t AND psa = :p AND minute > now() - make_interval(secs => :w)""")
        with self.engine.connect() as conn:
            row = conn.execute(sql, {"t": tenant_id, "p": self.psa, "w": self.window}).one()
        used = int(row.used)
        return {"psa": self.psa, "limit": self.limit, "hourly_limit": self.hourly_limit, "share": self.share,
                "used": used, "remaining": max(0, self.limit - used), "window_seconds": int(self.window),
                "resets_in": max(1.0, float(row.resets_in or 1.0))}

    def prune(self, keep_seconds=7200):
        with self.engine.begin() as conn:
            return conn.execute(text(f"DELETE FROM {self.table} WHERE psa = :p AND minute < now() - "
                                     f"make_interval(secs => :k)"), {"p": self.psa, "k": float(keep_seconds)}).rowcount

    # --- concurrency slots ---------------------------------------------------------------------
    @contextlib.contextmanager
    def slot(self, tenant_id, endpoint_key):
        """Hold one of ``slots`` cross-replica slots for (tenant, endpoint_key) during the block."""
        with self._slot(tenant_id, endpoint_key) as (_conn, got):
            yield got

    @contextlib.contextmanager
    def _slot(self, tenant_id, endpoint_key):
        """slot(), yielding (the AUTOCOMMIT connection holding the advisory lock, slot number)."""
        key = f"idsync.{self.psa}.slot:{tenant_id}:{endpoint_key}"
        conn = self.engine.connect().execution_options(isolation_level="AUTOCOMMIT")
        got = None
        try:
            deadline = time.monotonic() + self.slot_wait
            while True:
                got = conn.execute(text(
                    "SELECT s FROM generate_series(0, :n - 1) AS s "
                    "WHERE pg_try_advisory_lock(hashtext(:k), s) LIMIT 1"), {"n": self.slots, "k": key}).scalar()
                if got is not None:
                    break
                if time.monotonic() >= deadline:
                    raise SlotUnavailable(f"all {self.slots} {endpoint_key} slots busy for {self.slot_wait:.0f} s",
                                          retry_after=1.0)
                self.sleep(self._rng.uniform(0.01, 0.05))
            yield conn, got
        finally:
            if got is not None:
                try:
                    conn.execute(text("SELECT pg_advisory_unlock(hashtext(:k), :s)"), {"k": key, "s": got})
                except Exception:  # the connection is broken: dropping it frees the lock
                    log.warning("could not release slot %s/%s; dropping the connection", endpoint_key, got)
                    conn.invalidate()
            conn.close()

    @contextlib.contextmanager
    def request(self, tenant_id, endpoint_key):
        """A slot, then one request counted against the budget, for the duration of the block. The
        count is one autocommitted statement on the slot's connection (committed before the block)."""
        with self._slot(tenant_id, endpoint_key) as (conn, _):
            self.consume(tenant_id, conn=conn)
            yield

    @classmethod
    def from_config(cls, engine, table, psa, config, prefix):
        return cls(engine, table, psa,
                   hourly_limit=int(config.get(f"{prefix}_HOURLY_LIMIT", 10_000)),
                   share=float(config.get(f"{prefix}_BUDGET_SHARE", 0.4)),
                   window_seconds=float(config.get(f"{prefix}_BUDGET_WINDOW_SECONDS", 3600)),
                   slots=int(config.get(f"{prefix}_THREADS_PER_ENDPOINT", 3)),
                   slot_wait=float(config.get(f"{prefix}_SLOT_WAIT_SECONDS", 20)))
