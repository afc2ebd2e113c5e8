"""The three mapping screens' API (customers, products, subscription lines), price overrides,
approvals, preview and billing settings. Served by the mapping service over RPC."""
from gateway import schemas
from gateway.api import query_args, read_json, remote, route
from gateway.errors import NotFound

LIST_ARGS = ("page", "per_page", "search", "status")


def _json_safe(data):
    """marshmallow gives Decimals and dates; RPC wants plain JSON."""
    return {k: (str(v) if v is not None and not isinstance(v, (bool, int, str, list, dict)) else v)
            for k, v in data.items()}


class MappingRoutes:
    # --- lists ---------------------------------------------------------------------------------
    @route("GET", "/api/v1/mapping/customers", "Marketplace customers and their PSA companies", tags=("mapping",))
    def mapping_customers(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.customers, p.tenant_id, **query_args(request, *LIST_ARGS))

    @route("GET", "/api/v1/mapping/products", "MPNs, their PSA services and price rules", tags=("mapping",))
    def mapping_products(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.products, p.tenant_id, **query_args(request, *LIST_ARGS))

    @route("GET", "/api/v1/mapping/lines", "Subscription lines and their PSA contracts", tags=("mapping",))
    def mapping_lines(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.lines, p.tenant_id,
                      **query_args(request, *LIST_ARGS, "customer_id"))

    # --- decisions -----------------------------------------------------------------------------
    @route("PUT", "/api/v1/mapping/customers/<customer_id>", "Map a customer to a PSA company",
           capability="billing", tags=("mapping",), body=schemas.MapCustomer)
    def map_customer(self, request, customer_id):
        p = self.caller.require("billing")
        body = read_json(request, schemas.MapCustomer())
        return remote(self.config, self.mapping.map_customer, p.tenant_id, customer_id, body["psa_company_id"],
                      actor=self.actor(p))

    @route("PUT", "/api/v1/mapping/products/<path:mpn>", "Map an MPN to a PSA service with a price rule",
           capability="billing", tags=("mapping",), body=schemas.MapProduct)
    def map_product(self, request, mpn):
        p = self.caller.require("billing")
        body = _json_safe(read_json(request, schemas.MapProduct()))
        return remote(self.config, self.mapping.map_product, p.tenant_id, mpn, body["psa_service_id"],
                      body["price_rule"], markup_pct=body["markup_pct"], fixed_price=body["fixed_price"],
                      actor=self.actor(p))

    @route("PUT", "/api/v1/mapping/lines/<subscription_id>/<path:mpn>", "Link a subscription line to a contract",
           capability="billing", tags=("mapping",), body=schemas.LinkLine)
    def link_line(self, request, subscription_id, mpn):
        p = self.caller.require("billing")
        body = read_json(request, schemas.LinkLine())
        return remote(self.config, self.mapping.link_line, p.tenant_id, subscription_id, mpn,
                      body["psa_contract_id"], actor=self.actor(p))

    @route("POST", "/api/v1/mapping/<kind>/status/<path:key>", "Ignore or unmap one item "
           "(kind: customers|products|lines; a line's key is subscription_id/mpn)",
           capability="billing", tags=("mapping",), body=schemas.SetStatus)
    def set_mapping_status(self, request, kind, key):
        p = self.caller.require("billing")
        body = read_json(request, schemas.SetStatus())
        return remote(self.config, self.mapping.set_status, p.tenant_id, self._kind(kind), key, body["status"],
                      actor=self.actor(p))

    @route("POST", "/api/v1/mapping/<kind>/bulk", "Accept suggestions or ignore every item of a filtered selection",
           capability="billing", tags=("mapping",), body=schemas.Bulk)
    def bulk_mapping(self, request, kind):
        p = self.caller.require("billing")
        body = read_json(request, schemas.Bulk())
        return remote(self.config, self.mapping.bulk, p.tenant_id, self._kind(kind), body["action"],
                      search=body["search"], status=body["status"], actor=self.actor(p))

    # --- price overrides -----------------------------------------------------------------------
    @route("GET", "/api/v1/mapping/price-overrides", "Per-customer price rules", tags=("mapping",))
    def price_overrides(self, request):
        p = self.caller.require("read")
        return {"items": remote(self.config, self.mapping.price_overrides, p.tenant_id)}

    @route("PUT", "/api/v1/mapping/price-overrides/<customer_id>/<path:mpn>", "Set a customer's own price rule",
           capability="billing", tags=("mapping",), body=schemas.PriceOverride)
    def set_price_override(self, request, customer_id, mpn):
        p = self.caller.require("billing")
        body = _json_safe(read_json(request, schemas.PriceOverride()))
        return remote(self.config, self.mapping.set_price_override, p.tenant_id, customer_id, mpn, body["price_rule"],
                      markup_pct=body["markup_pct"], fixed_price=body["fixed_price"], actor=self.actor(p))

    @route("DELETE", "/api/v1/mapping/price-overrides/<customer_id>/<path:mpn>", "Remove a customer's price rule",
           capability="billing", tags=("mapping",))
    def remove_price_override(self, request, customer_id, mpn):
        p = self.caller.require("billing")
        return remote(self.config, self.mapping.remove_price_override, p.tenant_id, customer_id, mpn,
                      actor=self.actor(p))

    # --- approvals, preview, desired state -----------------------------------------------------
    @route("GET", "/api/v1/approvals", "Changes waiting for a person (status: pending|approved|rejected)",
           tags=("approvals",))
    def approvals(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.approvals, p.tenant_id,
                      **query_args(request, "page", "per_page", "status"))

    @route("POST", "/api/v1/approvals/decide", "Approve or reject changes, with a note and an optional date",
           capability="billing", tags=("approvals",), body=schemas.Decision)
    def decide(self, request):
        p = self.caller.require("billing")
        body = read_json(request, schemas.Decision())
        date = body["effective_date"].isoformat() if body["effective_date"] else None
        return remote(self.config, self.mapping.decide, p.tenant_id, body["approval_ids"], body["decision"],
                      note=body["note"], effective_date=date, actor=self.actor(p))

    @route("GET", "/api/v1/preview", "What the next postings would put on the invoice; writes nothing",
           tags=("approvals",))
    def preview(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.preview, p.tenant_id)

    @route("GET", "/api/v1/desired-lines", "The desired state of every PSA contract line", tags=("mapping",))
    def desired_lines(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.desired_lines, p.tenant_id, **query_args(request, "page", "per_page"))

    # --- settings and PSA references -------------------------------------------------------------
    @route("GET", "/api/v1/settings/billing", "Posting mode, thresholds and billing choices", tags=("settings",))
    def billing_settings(self, request):
        p = self.caller.require("read")
        return remote(self.config, self.mapping.settings, p.tenant_id)

    @route("PATCH", "/api/v1/settings/billing", "Change posting mode, thresholds and billing choices",
           capability="admin", tags=("settings",), body=schemas.BillingSettings)
    def update_billing_settings(self, request):
        p = self.caller.require("admin")
        body = _json_safe(read_json(request, schemas.BillingSettings()))
        return remote(self.config, self.mapping.update_settings, p.tenant_id, body, actor=self.actor(p))

    @route("POST", "/api/v1/mapping/references/refresh", "Re-read PSA companies, contracts and services",
           capability="billing", tags=("mapping",))
    def refresh_references(self, request):
        p = self.caller.require("billing")
        return remote(self.config, self.mapping.refresh_references, p.tenant_id)

    # --- helpers ---------------------------------------------------------------------------------
    @staticmethod
    def _kind(kind):
        kinds = {"customers": "customer", "products": "product", "lines": "line"}
        if kind not in kinds:
            raise NotFound(f"no mapping list {kind!r}; use customers, products or lines")
        return kinds[kind]

    def actor(self, principal):
        with self.db.transaction() as session:
            from gateway import directory

            return directory.get_user(session, principal.tenant_id, principal.user_id)["email"]
