"""The posting ledger and failure log of the tenant's PSA, and retries (served by autotask or connectwise)."""
from gateway import schemas
from gateway.api import query_args, read_json, remote, route


class PostingRoutes:
    @route("GET", "/api/v1/postings", "Every operation posted or planned for the PSA (filter: state, contract_id)",
           tags=("postings",))
    def postings(self, request):
        p = self.caller.require("read")
        psa, service = self.psa_service(p.tenant_id)
        return remote(self.config, service.ledger, p.tenant_id,
                      **query_args(request, "page", "per_page", "state", "contract_id"))

    @route("GET", "/api/v1/postings/failures", "Operations that failed, died or wait for a person, with the "
           "vendor's message", tags=("postings",))
    def posting_failures(self, request):
        p = self.caller.require("read")
        psa, service = self.psa_service(p.tenant_id)
        return remote(self.config, service.failures, p.tenant_id, **query_args(request, "page", "per_page"))

    @route("POST", "/api/v1/postings/retry", "Retry failed or held operations (the PSA is read again first)",
           capability="billing", tags=("postings",), body=schemas.Retry)
    def retry_postings(self, request):
        p = self.caller.require("billing")
        body = read_json(request, schemas.Retry())
        psa, service = self.psa_service(p.tenant_id)
        return remote(self.config, service.retry, p.tenant_id, body["posting_ids"])

    @route("GET", "/api/v1/postings/status", "Lines in sync, pending, held or failed, and the PSA API budget",
           tags=("postings",))
    def posting_status(self, request):
        p = self.caller.require("read")
        psa, service = self.psa_service(p.tenant_id)
        return {"psa": psa, **remote(self.config, service.posting_status, p.tenant_id)}
