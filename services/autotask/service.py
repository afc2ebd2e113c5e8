"""Autotask service. Posting arrives with issue 6; today: connection test and reference browsing."""
from nameko.rpc import RpcProxy, rpc

from common.credentials import CredentialVault, tenant_credentials
from common.db import Database
from common.errors import BadRequest, VendorUnavailable
from common.logs import log_context
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from common.vendor_client import Unauthorized, VendorError
from services.autotask import models, references
from services.autotask.client import AutotaskClient


class AutotaskService(ServiceBase):
    name = "autotask"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
    gateway = RpcProxy("gateway")
    vault = CredentialVault()

    def client(self, tenant_id):
        return AutotaskClient(tenant_credentials(self.gateway, self.vault, tenant_id, "autotask"))

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

    @rpc
    def browse_references(self, tenant_id, kind):
        if kind not in references.BROWSE:
            raise BadRequest(f"kind must be one of {sorted(references.BROWSE)}")
        with log_context(tenant_id=tenant_id):
            try:
                return references.BROWSE[kind](self.client(tenant_id))
            except VendorError as exc:
                raise VendorUnavailable(str(exc)) from None
