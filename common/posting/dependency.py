"""The dependency both PSA services use to post: the engine connection, request budget, retry policy,
lease, and caches of clients and tenant settings, handing workers a Poster for one pass."""
from __future__ import annotations

import hashlib
import logging
import threading
import time

import eventlet
from nameko.extensions import DependencyProvider

from common.db import make_engine
from common.posting import Poster, RequestBudget, RetryPolicy
from common.posting.engine import default_owner
from common.vault import Vault

log = logging.getLogger(__name__)


class PostingDependency(DependencyProvider):
    """A PSA service's posting machinery, configured from its config (`prefix` names the PSA's keys):
    POSTING_BATCH, POSTING_CONCURRENCY (per tenant: the vendor's limit), POSTING_TENANTS_IN_PARALLEL,
    POSTING_LEASE_SECONDS, POSTING_SETTLE_SECONDS,
    POSTING_MAX_DELAY_SECONDS, POSTING_MAX_TICK_SECONDS, POSTING_MAX_ATTEMPTS, POSTING_BACKOFF [base, cap],
    POSTING_SETTINGS_TTL, <PREFIX>_HOURLY_LIMIT, <PREFIX>_BUDGET_SHARE, <PREFIX>_THREADS_PER_ENDPOINT,
    <PREFIX>_SLOT_WAIT_SECONDS, <PREFIX>_TIMEOUT [connect, read]. Subclasses set psa, prefix,
    tables (the service's posting tables) and client_class (a budgeted vendor client)."""

    psa = "psa"
    prefix = "PSA"
    tables = None
    client_class = None

    CLIENT_TTL = 300.0

    def setup(self):
        config = self.container.config
        self.config = config
        self.concurrency = int(config.get("POSTING_CONCURRENCY", 3))
        # a replica posts for this many tenants at once (each at most `concurrency` sends): with one,
        # a replica serving many tenants sent 3 requests at a time and left the PSA's latency idle
        self.tenants_in_parallel = int(config.get("POSTING_TENANTS_IN_PARALLEL", 4))
        # every send holds a slot connection (common/posting/budget.py) while it is in flight
        self.engine = make_engine(config["DB_URI"], config["DB_SCHEMA"],
                                  pool_size=max(6, self.concurrency * self.tenants_in_parallel))
        self.budget = RequestBudget.from_config(self.engine, self.tables.budget, self.psa, config, self.prefix)
        self.policy = RetryPolicy.from_config(config)
        self.owner = default_owner()
        timeout = config.get(f"{self.prefix}_TIMEOUT", [3.05, 30.0])
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.batch = int(config.get("POSTING_BATCH", 500))
        # 0.3 s: one sync's changes of a tenant reach the schedule tens of ms apart and still make one
        # batch, while a lone change no longer waits a whole second (docs/performance.md)
        self.settle = float(config.get("POSTING_SETTLE_SECONDS", 0.3))
        self.max_delay = float(config.get("POSTING_MAX_DELAY_SECONDS", 10.0))
        self.max_tick = float(config.get("POSTING_MAX_TICK_SECONDS", 60.0))
        self.settings_ttl = float(config.get("POSTING_SETTINGS_TTL", 30.0))
        # a send must end before its lease can run out: slot wait + connect (twice, one resend when
        # the connection never opened) + read + margin
        needed = self.budget.slot_wait + 2 * self.timeout[0] + self.timeout[1] + 5.0
        self.lease = float(config.get("POSTING_LEASE_SECONDS", 90.0))
        if self.lease < needed:
            log.warning("POSTING_LEASE_SECONDS %.1f is shorter than a send can take; using %.1f", self.lease, needed)
            self.lease = needed
        self.vault = Vault.from_config(config)
        self._clients = {}
        self._settings = {}
        self._lock = threading.Lock()
        self._last_prune = 0.0

    def stop(self):
        self.engine.dispose()

    def kill(self):
        self.engine.dispose()

    def get_dependency(self, worker_ctx):
        return self

    # --- what workers use ------------------------------------------------------------------------
    def new_client(self, tenant_id, document):
        return self.client_class(document, budget=self.budget, tenant_id=tenant_id, timeout=self.timeout)

    def client(self, tenant_id, ciphertext):
        """A budgeted client for the tenant, cached per credential version (a changed credential
        makes a new client at once)."""
        digest = hashlib.sha256(str(ciphertext).encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._clients.get(tenant_id)
            if hit and hit[0] == digest and now - hit[1] < self.CLIENT_TTL:
                return hit[2]
        client = self.new_client(tenant_id, self.vault.decrypt(ciphertext))
        with self._lock:
            self._clients[tenant_id] = (digest, now, client)
        return client

    def edited_in_psa(self, tenant_id, fetch):
        """The tenant's edited_in_psa setting via ``fetch()`` (mapping.settings), cached briefly.
        Anything but "overwrite" - including no answer - means hold: never overwrite a person's
        edit on a guess."""
        now = time.monotonic()
        with self._lock:
            hit = self._settings.get(tenant_id)
            if hit and now - hit[0] < self.settings_ttl:
                return hit[1]
        try:
            with eventlet.Timeout(10):
                value = (fetch() or {}).get("edited_in_psa") or "hold"
        except BaseException as exc:  # noqa: BLE001 - eventlet.Timeout is a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            log.warning("mapping.settings for tenant %s unavailable (%s); holding edited lines", tenant_id,
                        type(exc).__name__)
            value = "hold"
        value = "overwrite" if value == "overwrite" else "hold"
        with self._lock:
            self._settings[tenant_id] = (now, value)
        return value

    def poster(self, store, outbox, adapter):
        if time.monotonic() - self._last_prune > 600:
            self._last_prune = time.monotonic()
            try:
                self.budget.prune()
            except Exception:
                log.exception("pruning the request budget failed")
        return Poster(psa=self.psa, tables=self.tables, store=store, outbox=outbox, adapter=adapter,
                      policy=self.policy, owner=self.owner, batch_size=self.batch, concurrency=self.concurrency,
                      tenants_in_parallel=self.tenants_in_parallel,
                      lease_seconds=self.lease, settle_seconds=self.settle, max_delay_seconds=self.max_delay,
                      max_tick_seconds=self.max_tick)
