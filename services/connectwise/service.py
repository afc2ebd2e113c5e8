"""ConnectWise service: posting desired agreement lines (additions) to ConnectWise exactly once, plus
the connection test and reference browsing the mapping screens use.

Events in: mapping.connectwise_line_desired (LineDesired; contract_id = agreement id, service_id =
catalog product id) - folded into the line's desired schedule (common.posting.store).
Timer: post_due (every IDSYNC_POSTING_POLL seconds, default 0.2) runs the posting loop
(common.posting.engine.Poster with services/connectwise/posting.py + planner.py). Events out
(outbox): line_posted, posting_failed.

RPC (first argument the caller's tenant_id): test_connection, browse_references, ledger, failures,
retry, posting_status - the same shapes as the autotask service's.
"""
from nameko.rpc import rpc
from nameko.timer import timer

from common.consumers import reliable_handler
from common.logs import log_context
from common.outbox import OutboxRelay
from common.posting.service import POLL_SECONDS, PsaService
from common.vendor_client import Unauthorized, VendorError
from services.connectwise import models, references
from services.connectwise.client import ConnectWiseClient
from services.connectwise.posting import ConnectWiseAdapter, ConnectWisePosting


class ConnectWiseService(PsaService):
    name = "connectwise"
    psa = "connectwise"
    models = models
    references = references
    outbox = OutboxRelay(lambda: models.outbox)
    posting = ConnectWisePosting()

    def client(self, tenant_id):
        return ConnectWiseClient(self.credentials(tenant_id))

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

    @reliable_handler("mapping", "connectwise_line_desired", batch=True)
    def on_line_desired(self, payloads):
        self.record_desired(payloads)

    @timer(interval=POLL_SECONDS)
    def post_due(self):
        self.run_posting(ConnectWiseAdapter)
