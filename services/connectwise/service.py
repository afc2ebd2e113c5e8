"""ConnectWise service. Posting arrives with issue 6; today: connection test and reference browsing."""
from nameko.rpc import RpcProxy, rpc

from common.credentials import CredentialVault, tenant_credentials
from common.db import Database
from common.errors import BadRequest, VendorUnavailable
from common.logs import log_context
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from common.vendor_client import Unauthorized, VendorError
from services.connectwise import models, references
from services.connectwise.client import ConnectWiseClient


class ConnectWiseService(ServiceBase):
    name = "connectwise"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
    gateway = RpcProxy("gateway")
    vault = CredentialVault()

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
            except VendorError as exc:
                raise VendorUnavailable(str(exc)) from None
