"""ConnectWise service: posting desired agreement lines (additions) to ConnectWise exactly once, plus
the connection test and reference browsing the mapping screens use.

Events in: mapping.connectwise_line_desired (LineDesired; contract_id = agreement id, service_id =
catalog product id) - folded into the line's desired schedule (common.posting.store).
Timer: post_due (every IDSYNC_POSTING_POLL seconds, default 0.5) runs the posting loop
(common.posting.engine.Poster with services/connectwise/posting.py + planner.py). Events out
(outbox): line_posted, posting_failed.

RPC (first argument the caller's tenant_id): test_connection, browse_references, ledger, failures,
retry, posting_status - the same shapes as the autotask service's.
"""
import os

from nameko.rpc import RpcProxy, rpc
from nameko.timer import timer

from common.consumers import reliable_handler
from common.credentials import CredentialVault, tenant_credentials
from common.db import Database
from common.errors import BadRequest, VendorUnavailable
from common.events import load_event
from common.idempotency import claim_event
from common.logs import log_context
from common.outbox import OutboxRelay
from common.posting import store as posting_store
from common.posting.retry import NotSent
from common.service_base import ServiceBase
from common.vendor_client import Unauthorized, VendorError
from services.connectwise import models, references
from services.connectwise.client import ConnectWiseClient
from services.connectwise.posting import ConnectWiseAdapter, ConnectWisePosting

POLL_SECONDS = float(os.environ.get("IDSYNC_POSTING_POLL", "0.5"))


class ConnectWiseService(ServiceBase):
    name = "connectwise"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
    gateway = RpcProxy("gateway")
    mapping = RpcProxy("mapping")
    vault = CredentialVault()
    posting = ConnectWisePosting()

    def client(self, tenant_id):
        return ConnectWiseClient(tenant_credentials(self.gateway, self.vault, tenant_id, "connectwise"))

    @rpc
    def test_connection(self, tenant_id):
        """{"ok": bool, "message": ...}: what a person needs after typing in keys."""
        with log_context(tenant_id=tenant_id):
            try:
                companies = self.client(tenant_id).check_credentials()
            except Unauthorized as exc:
                return {"ok": False, "message": f"ConnectWise refused the keys: {exc.message}"}
            except VendorError as exc:
                return {"ok": False, "message": f"ConnectWise did not answer usefully: {exc}"}
            return {"ok": True, "message": f"connected; {companies} companies visible"}

    @rpc
    def browse_references(self, tenant_id, kind):
        if kind not in references.BROWSE:
            raise BadRequest(f"kind must be one of {sorted(references.BROWSE)}")
        with log_context(tenant_id=tenant_id):
            try:
                return references.BROWSE[kind](self.client(tenant_id))
            except (VendorError, NotSent) as exc:
                raise VendorUnavailable(str(exc)) from None

    # --- posting -------------------------------------------------------------------------------
    @reliable_handler("mapping", "connectwise_line_desired")
    def on_line_desired(self, payload):
        event = load_event("mapping", "connectwise_line_desired", payload)
        with log_context(event["tenant_id"], event["event_id"]), self.db.transaction() as session:
            if not claim_event(session, models.processed_events, "connectwise.on_line_desired", event):
                return
            posting_store.record_desired(session, models.posting, event["tenant_id"], event)

    @timer(interval=POLL_SECONDS)
    def post_due(self):
        adapter = ConnectWiseAdapter(
            client_factory=lambda tenant_id: self.posting.client(
                tenant_id, self.gateway.tenant_credentials(tenant_id, "connectwise")),
            settings_lookup=lambda tenant_id: self.posting.edited_in_psa(
                tenant_id, lambda: self.mapping.settings(tenant_id)))
        self.posting.poster(self.db, self.outbox, adapter).run_due()

    @rpc
    def ledger(self, tenant_id, page=1, per_page=50, state=None, contract_id=None):
        """Every planned operation, newest first: the list envelope of common.paging."""
        with self.db.transaction() as session:
            return posting_store.ledger_page(session, models.posting, tenant_id, page, per_page, state, contract_id)

    @rpc
    def failures(self, tenant_id, page=1, per_page=50):
        """The failure log: dead, failed (being retried) and held (edited in the PSA) operations."""
        with self.db.transaction() as session:
            return posting_store.failures_page(session, models.posting, tenant_id, page, per_page)

    @rpc
    def retry(self, tenant_id, posting_ids):
        with log_context(tenant_id=tenant_id), self.db.transaction() as session:
            return {"retried": posting_store.retry(session, models.posting, tenant_id, posting_ids)}

    @rpc
    def posting_status(self, tenant_id):
        """{"lines": {status: count}, "budget": {limit, used, remaining, ...}}."""
        with self.db.transaction() as session:
            lines = posting_store.line_status(session, models.posting, tenant_id)
        return {"lines": lines, "budget": self.posting.budget.usage(str(tenant_id))}
