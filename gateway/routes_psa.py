"""The tenant's PSA connection: test it, and browse its companies, contracts and services."""
from gateway import directory
from gateway.api import remote, route
from gateway.errors import NotFound

KINDS = ("company", "contract", "service")


class PsaRoutes:
    def psa_service(self, tenant_id):
        """The RPC proxy of the PSA this tenant bills in."""
        with self.db.transaction() as session:
            psa = directory.get_tenant(session, tenant_id)["psa"]
        return psa, {"autotask": self.autotask, "connectwise": self.connectwise}[psa]

    @route("POST", "/api/v1/psa/test-connection", "Check the stored PSA credentials against the PSA",
           capability="admin", tags=("psa",))
    def psa_test_connection(self, request):
        p = self.caller.require("admin")
        psa, service = self.psa_service(p.tenant_id)
        return {"psa": psa, **remote(self.config, service.test_connection, p.tenant_id)}

    @route("GET", "/api/v1/psa/<kind>", "Browse PSA companies, contracts or services (kind: company|contract|service)",
           tags=("psa",))
    def psa_browse(self, request, kind):
        p = self.caller.require("read")
        if kind not in KINDS:
            raise NotFound(f"no PSA record kind {kind!r}; use one of {', '.join(KINDS)}")
        psa, service = self.psa_service(p.tenant_id)
        items = remote(self.config, service.browse_references, p.tenant_id, kind)
        search = (request.args.get("search") or "").strip().lower()
        if search:
            items = [i for i in items if search in i["name"].lower()]
        return {"psa": psa, "kind": kind, "items": items, "total": len(items)}
