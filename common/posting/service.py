"""What the Autotask and ConnectWise services have in common: reference browsing for the mapping
screens, folding desired lines into the posting schedule, the posting loop, and the ledger RPCs.
A PSA service subclasses PsaService and adds its client, its connection test, its event handler
(the event type names the PSA) and its posting timer."""
import datetime as dt
import logging
import os

import eventlet
from nameko.rpc import RpcProxy, rpc
from nameko.timer import timer

from common.consumers import by_tenant
from common.credentials import CredentialVault, tenant_credentials
from common.db import Database
from common.errors import BadRequest, VendorUnavailable
from common.events import load_event
from common.idempotency import claim_events
from common.logs import log_context
from common.posting import reconcile
from common.posting import store as posting_store
from common.posting.retry import NotSent
from common.service_base import ServiceBase
from common.vendor_client import VendorError

log = logging.getLogger(__name__)

POLL_SECONDS = float(os.environ.get("IDSYNC_POSTING_POLL", "0.2"))
# the nightly PSA re-read: after this hour (UTC; the marketplace's full sync runs at 2), checked every
# few minutes so a replica that was down at that hour catches up
RECONCILE_HOUR_UTC = int(os.environ.get("IDSYNC_RECONCILE_HOUR_UTC", "3"))
RECONCILE_POLL_SECONDS = float(os.environ.get("IDSYNC_RECONCILE_POLL_SECONDS", "300"))
# the posting pass asks the gateway for credentials after leasing its batch: an answer that does not
# come must not hold the leased lines (with their heartbeat renewing the leases) for the 120 s RPC
# bound; the batch is released with the read-failure backoff instead (docs/chaos.md, finding 1)
CREDENTIALS_SECONDS = float(os.environ.get("IDSYNC_POSTING_CREDENTIALS_TIMEOUT", "10"))


def posting_credentials(gateway, tenant_id, psa, seconds=CREDENTIALS_SECONDS):
    """The tenant's encrypted credentials from the gateway within ``seconds``, else VendorUnavailable."""
    timeout = eventlet.Timeout(seconds)
    try:
        return gateway.tenant_credentials(tenant_id, psa)
    except eventlet.Timeout as exc:
        if exc is not timeout:
            raise
        raise VendorUnavailable(f"the gateway gave no {psa} credentials within {seconds:g}s") from None
    finally:
        timeout.cancel()


class PsaService(ServiceBase):
    psa = "psa"          # the credential kind and the event prefix: autotask | connectwise
    models = None        # the service's models module (posting, processed_events tables)
    references = None    # the service's references module (BROWSE by kind)

    db = Database()
    gateway = RpcProxy("gateway")
    mapping = RpcProxy("mapping")
    vault = CredentialVault()

    def credentials(self, tenant_id):
        return tenant_credentials(self.gateway, self.vault, tenant_id, self.psa)

    def reference_client(self, tenant_id):
        """The client browse_references reads with (override to count it against the budget)."""
        return self.client(tenant_id)

    @rpc
    def browse_references(self, tenant_id, kind):
        if kind not in self.references.BROWSE:
            raise BadRequest(f"kind must be one of {sorted(self.references.BROWSE)}")
        with log_context(tenant_id=tenant_id):
            try:
                return self.references.BROWSE[kind](self.reference_client(tenant_id))
            except (VendorError, NotSent) as exc:
                raise VendorUnavailable(str(exc)) from None

    # --- posting -------------------------------------------------------------------------------
    def record_desired(self, payloads):
        """The body of the subclass's `<psa>_line_desired` handler: a message's events (an envelope
        from the mapping service's relay) folded into the schedule in one transaction, tenant by
        tenant (by_tenant: contract lines are locked in one order, so two batches never deadlock)."""
        event_type = f"{self.psa}_line_desired"
        events = [load_event("mapping", event_type, payload) for payload in payloads]
        with log_context(events[0]["tenant_id"], events[0]["event_id"]), self.db.transaction() as session:
            fresh = claim_events(session, self.models.processed_events, f"{self.psa}.on_line_desired", events)
            for tenant_id, tenant_events in by_tenant(fresh):
                posting_store.record_desired_many(session, self.models.posting, tenant_id, tenant_events)

    def run_posting(self, adapter_class):
        """The body of the subclass's posting timer: one pass of the posting loop."""
        adapter = adapter_class(
            client_factory=lambda tenant_id: self.posting.client(
                tenant_id, posting_credentials(self.gateway, tenant_id, self.psa)),
            settings_lookup=lambda tenant_id: self.posting.edited_in_psa(
                tenant_id, lambda: self.mapping.settings(tenant_id)))
        self.posting.poster(self.db, self.outbox, adapter).run_due()

    # --- the nightly PSA reconciliation (common/posting/reconcile.py) --------------------------------
    @timer(interval=RECONCILE_POLL_SECONDS)
    def reconcile_due(self):
        now = dt.datetime.now(dt.timezone.utc)
        with self.db.transaction() as session:
            due = reconcile.tenants_due(session, self.models.posting, now, RECONCILE_HOUR_UTC)
        for tenant_id in due:
            with log_context(tenant_id=tenant_id), self.db.transaction() as session:
                lines = reconcile.start(session, self.models.posting, tenant_id, now.date())
            if lines is not None:
                log.info("%s nightly reconciliation: %d contract lines sent round to re-read the PSA", self.psa, lines)
                self.catch_up_desired(tenant_id)

    def catch_up_desired(self, tenant_id):
        """Ask the mapping service again for every contract line whose schedule we hold an older
        version of (reconcile.behind). Returns how many were asked for; None when the mapping
        service did not answer (tried again at the next reconciliation)."""
        with log_context(tenant_id=tenant_id):
            try:
                theirs = self.mapping.desired_versions(tenant_id)
                with self.db.transaction() as session:
                    ours = reconcile.desired_versions(session, self.models.posting, tenant_id)
                missing = reconcile.behind(theirs, ours)
                if missing:
                    log.warning("%s: %d contract line(s) behind the mapping service's schedule; asking again",
                                self.psa, len(missing))
                    self.mapping.resend_desired(tenant_id, missing)
                return len(missing)
            except Exception as exc:  # noqa: BLE001 - a check, not the posting: next run tries again
                log.warning("%s desired-state check failed: %s: %s", self.psa, type(exc).__name__, exc)
                return None

    @rpc
    def reconcile_now(self, tenant_id):
        """Re-read every in-sync contract line of the tenant now (ops and the portal)."""
        today = dt.datetime.now(dt.timezone.utc).date()
        with log_context(tenant_id=tenant_id), self.db.transaction() as session:
            lines = reconcile.start(session, self.models.posting, tenant_id, today, trigger="manual")
        behind = self.catch_up_desired(tenant_id)
        with self.db.transaction() as session:
            return {"lines": lines, "behind": behind,
                    "last": reconcile.last_run(session, self.models.posting, tenant_id)}

    @rpc
    def ledger(self, tenant_id, page=1, per_page=50, state=None, contract_id=None):
        """Every planned operation, newest first: the list envelope of common.paging."""
        with self.db.transaction() as session:
            return posting_store.ledger_page(session, self.models.posting, tenant_id, page, per_page, state,
                                             contract_id)

    @rpc
    def failures(self, tenant_id, page=1, per_page=50):
        """The failure log: dead, failed (being retried) and held (edited in the PSA) operations."""
        with self.db.transaction() as session:
            return posting_store.failures_page(session, self.models.posting, tenant_id, page, per_page)

    @rpc
    def line_states(self, tenant_id, keys):
        """What we know of these contract lines in the PSA (the Linked Subscriptions report)."""
        with self.db.transaction() as session:
            return posting_store.line_states(session, self.models.posting, tenant_id, keys)

    @rpc
    def held_lines(self, tenant_id):
        """Contract lines held as edited in the PSA: [{posting_id, contract_id, service_id, ...}]."""
        with self.db.transaction() as session:
            return posting_store.held_lines(session, self.models.posting, tenant_id)

    @rpc
    def retry(self, tenant_id, posting_ids):
        with log_context(tenant_id=tenant_id), self.db.transaction() as session:
            return {"retried": posting_store.retry(session, self.models.posting, tenant_id, posting_ids)}

    @rpc
    def posting_status(self, tenant_id):
        """{"lines": {status: count}, "budget": {limit, used, remaining, ...}, "reconciliation": the last
        nightly or manual PSA re-read (run_on, started_at, trigger, lines) or None}."""
        with self.db.transaction() as session:
            lines = posting_store.line_status(session, self.models.posting, tenant_id)
            last = reconcile.last_run(session, self.models.posting, tenant_id)
        return {"lines": lines, "budget": self.posting.budget.usage(str(tenant_id)), "reconciliation": last}
