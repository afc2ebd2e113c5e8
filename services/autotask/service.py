"""Autotask service: posting desired contract lines to Autotask exactly once, plus the connection
test and reference browsing the mapping screens use.

Events in: mapping.autotask_line_desired (LineDesired: "from effective_date on, this contract line
says quantity X at price P") - folded into the line's desired schedule (common.posting.store).
Timer: post_due (every IDSYNC_POSTING_POLL seconds, default 0.2) runs the posting loop
(common.posting.engine.Poster with services/autotask/posting.py): claim due lines, read Autotask in
batches, plan, post, ledger. Events out (outbox): line_posted, posting_failed.

RPC (first argument the caller's tenant_id): test_connection, browse_references, ledger, failures,
retry, posting_status.
"""
from nameko.rpc import rpc
from nameko.timer import timer

from common.consumers import reliable_handler
from common.logs import log_context
from common.outbox import OutboxRelay
from common.posting.service import POLL_SECONDS, PsaService
from common.vendor_client import Unauthorized, VendorError
from services.autotask import models, references
from services.autotask.client import AutotaskClient
from services.autotask.posting import AutotaskAdapter, AutotaskPosting


class AutotaskService(PsaService):
    name = "autotask"
    psa = "autotask"
    models = models
    references = references
    outbox = OutboxRelay(lambda: models.outbox)
    posting = AutotaskPosting()

    def client(self, tenant_id):
        return AutotaskClient(self.credentials(tenant_id))

    def reference_client(self, tenant_id):
        """A fresh client (a credential just typed in is used at once) that counts against the budget."""
        return self.posting.new_client(tenant_id, self.credentials(tenant_id))

    @rpc
    def test_connection(self, tenant_id):
        """{"ok": bool, "message": ...}: what a person needs after typing in keys."""
        with log_context(tenant_id=tenant_id):
            try:
                threshold = self.client(tenant_id).threshold_information()
            except Unauthorized as exc:
                return {"ok": False, "message": f"Autotask refused the credentials: {exc.message}"}
            except VendorError as exc:
                return {"ok": False, "message": f"Autotask did not answer usefully: {exc}"}
            used, limit = threshold.get("currentTimeframeRequestCount"), threshold.get("externalRequestThreshold")
            return {"ok": True, "message": f"connected; {used} of {limit} API requests used this hour"}

    @reliable_handler("mapping", "autotask_line_desired", batch=True)
    def on_line_desired(self, payloads):
        self.record_desired(payloads)

    @timer(interval=POLL_SECONDS)
    def post_due(self):
        self.run_posting(AutotaskAdapter)
