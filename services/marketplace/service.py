"""Marketplace service: entrypoints only; rules in domain.py, the sync in sync.py, SQL in snapshots.py.

RPC for the gateway (first argument always the caller's tenant_id; another tenant's id is NotFound):
sync_now, sync_runs, sync_run, quarantine, subscription_lines, customers, products; and
apply_customers (ops and tests record customer records directly).
Timers: `claim_sync_runs` (SYNC_POLL_SECONDS) starts queued runs; `schedule_syncs`
(SYNC_SCHEDULE_SECONDS) queues the runs that are due for tenants with marketplace credentials.
"""
import logging

import eventlet
from nameko.exceptions import RemoteError
from nameko.rpc import RpcProxy, rpc

from common.credentials import CredentialVault, tenant_credentials
from common.db import Database
from common.errors import BadRequest, NotFound
from common.logs import log_context
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from services.marketplace import models, snapshots, sync
from services.marketplace.dependencies import SyncRunner, config_timer

log = logging.getLogger(__name__)
# answers to the caller (404/400 at the gateway), not failures of ours: logged without a traceback
api = rpc(expected_exceptions=(NotFound, BadRequest))


def tenant(tenant_id) -> str:
    if tenant_id is None or not str(tenant_id).strip():
        raise BadRequest("tenant_id is required")
    return str(tenant_id)


class MarketplaceService(ServiceBase):
    name = "marketplace"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
    gateway = RpcProxy("gateway")
    vault = CredentialVault()
    runner = SyncRunner()

    # --- sync ----------------------------------------------------------------------------------
    @api
    def sync_now(self, tenant_id, full=False):
        """Queue a sync run (non-blocking) -> {run_id, kind, outcome: "queued"}. A run already waiting
        for this tenant is returned instead of a second one (asked for full, it becomes full)."""
        if not isinstance(full, bool):
            raise BadRequest("full must be true or false")
        with log_context(tenant_id=tenant_id):
            run = snapshots.queue_run(self.db, tenant(tenant_id), "full" if full else "incremental", "manual")
            log.info("sync run %s queued (%s)", run["run_id"], run["kind"])
        return {"run_id": run["run_id"], "kind": run["kind"], "outcome": run["outcome"]}

    @config_timer("SYNC_POLL_SECONDS", 2)
    def claim_sync_runs(self):
        settings = self.runner.settings
        for tenant_id, run_id in snapshots.fail_stale_runs(self.db, settings.stale_seconds):
            with log_context(tenant_id=tenant_id):
                log.warning("sync run %s abandoned (no heartbeat for %ss)", run_id, settings.stale_seconds)
        for run in snapshots.claim_runs(self.db, self.runner.free_slots(), self.runner.worker_id):
            with log_context(tenant_id=run["tenant_id"]):
                try:
                    with eventlet.Timeout(settings.rpc_timeout_seconds):
                        credentials = tenant_credentials(self.gateway, self.vault, run["tenant_id"], "marketplace")
                except (Exception, eventlet.Timeout) as exc:  # none stored, undecryptable, gateway away
                    reason = ("no marketplace credentials are stored for this tenant"
                              if isinstance(exc, RemoteError) and exc.exc_type == "NotFound"
                              else f"could not get the marketplace credentials ({type(exc).__name__})")
                    log.warning("sync run %s cannot start: %s", run["run_id"], reason)
                    snapshots.finish_run(self.db, run["tenant_id"], run["run_id"], "failed", error=reason)
                    continue
                self.runner.launch(sync.execute_run, run["run_id"], self.db, self.outbox, run, credentials,
                                  settings, should_stop=self.runner.should_stop)

    @config_timer("SYNC_SCHEDULE_SECONDS", 60)
    def schedule_syncs(self):
        try:  # bounded: a worker waiting forever for an absent gateway would also block our shutdown
            with eventlet.Timeout(self.runner.settings.rpc_timeout_seconds):
                tenants = self.gateway.tenants_with_credentials("marketplace")
        except (Exception, eventlet.Timeout) as exc:  # the gateway is away: try again next tick
            log.warning("cannot list the tenants to sync (%s)", type(exc).__name__)
            return
        sync.schedule_due_runs(self.db, tenants, self.runner.settings)
        if self.runner.prune_due():
            snapshots.prune_runs(self.db, tenants, self.runner.settings.keep_days)

    # --- reads for the gateway -------------------------------------------------------------------
    @api
    def sync_runs(self, tenant_id, page=1, per_page=50):
        return snapshots.list_runs(self.db, tenant(tenant_id), page, per_page)

    @api
    def sync_run(self, tenant_id, run_id):
        return snapshots.get_run(self.db, tenant(tenant_id), run_id)

    @api
    def quarantine(self, tenant_id, page=1, per_page=50, include_resolved=False):
        return snapshots.list_quarantine(self.db, tenant(tenant_id), page, per_page, include_resolved)

    @api
    def subscription_lines(self, tenant_id, page=1, per_page=50, search=None, status=None):
        return snapshots.list_lines(self.db, tenant(tenant_id), page, per_page, search, status)

    @api
    def customers(self, tenant_id, page=1, per_page=50, search=None):
        return snapshots.list_customers(self.db, tenant(tenant_id), page, per_page, search)

    @api
    def products(self, tenant_id, page=1, per_page=50, search=None):
        return snapshots.list_products(self.db, tenant(tenant_id), page, per_page, search)

    # --- direct writes (ops, tests) --------------------------------------------------------------
    @rpc
    def apply_customers(self, tenant_id, records):
        """Record marketplace customer records for a tenant; returns how many changed.

        The sync does the same from the Ingram API; ops and tests can call it directly.
        """
        changed = 0
        with self.db.transaction() as session:
            for record in records:
                changed += snapshots.apply_customer(session, self.outbox, tenant_id, record)
        return changed
