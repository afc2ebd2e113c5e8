"""Portal pages: the three mapping screens (customers, products, subscription lines).

Each screen is a table with status counts, a status filter and a search box, 50 rows a page,
and per row the actions a billing person needs (accept the suggestion, choose the PSA record,
ignore or unmap), plus bulk accept/ignore over the current filter. Viewers see the same tables
without any action. The mapping service does the work (RPC); handlers here stay thin.

`MappingPages` also carries the other billing pages (approvals, preview, sync, settings: see
portal_billing.py), so the gateway mixes in this one class.
"""
import dataclasses
import pathlib

from werkzeug.wrappers import Response

from gateway import schemas
from gateway.errors import BadRequest, NotFound
from gateway.portal import SECURITY_HEADERS
from gateway.portal_billing import BillingPages
from gateway.portal_support import PER_PAGE, STATUSES, optional, page_number, page_route, required, text_arg
from gateway.routes_mapping import _json_safe

STATIC = pathlib.Path(__file__).parent / "static"
STATIC_TYPES = {"portal.js": "text/javascript; charset=utf-8", "portal.css": "text/css; charset=utf-8"}
SELECT_LIMIT = 25  # up to this many PSA records: a <select>; more: a search box with a <datalist>
PRICE_RULES = {"psa_catalog": "PSA catalog price", "msrp": "Marketplace price (MSRP)",
               "cost_plus": "Cost plus markup %", "fixed": "Fixed price"}


@dataclasses.dataclass(frozen=True)
class Screen:
    name: str  # URL part: customers | products | lines
    kind: str  # the mapping service's kind: customer | product | line
    title: str
    ref_kind: str  # PSA reference kind: company | service | contract
    ref_label: str  # what a person calls that PSA record
    psa_id: str  # item field holding the chosen PSA record
    psa_name: str

    @property
    def path(self):
        return f"/mapping/{self.name}"


SCREENS = {s.name: s for s in (
    Screen("customers", "customer", "Customers", "company", "PSA company", "psa_company_id", "psa_company_name"),
    Screen("products", "product", "Products", "service", "PSA service", "psa_service_id", "psa_service_name"),
    Screen("lines", "line", "Subscription lines", "contract", "PSA contract", "psa_contract_id", "psa_contract_name"),
)}


def _screen(name):
    if name not in SCREENS:
        raise NotFound(f"there is no mapping screen called {name!r}")
    return SCREENS[name]


def line_key(item):
    return f"{item['subscription_id']}/{item['mpn']}"


def rule_text(item):
    rule = item.get("price_rule")
    if not rule:
        return ""
    if rule == "cost_plus":
        return f"cost + {item.get('markup_pct') or 0}%"
    if rule == "fixed":
        return f"fixed {item.get('fixed_price') or ''}".strip()
    return {"psa_catalog": "PSA catalog", "msrp": "MSRP"}.get(rule, rule)


def reference_options(references, companies=None):
    """[(psa_id, label)] of the active PSA records, by name; contracts also name their company."""
    names = {str(c["psa_id"]): c["name"] for c in companies or []}
    options = []
    for ref in sorted(references or [], key=lambda r: (str(r.get("name") or "").lower(), str(r["psa_id"]))):
        if ref.get("active") is False:
            continue
        label = ref.get("name") or str(ref["psa_id"])
        company = names.get(str(ref.get("company_id")))
        options.append({"id": str(ref["psa_id"]), "label": f"{label} — {company}" if company else label,
                        "company_id": str(ref.get("company_id")) if ref.get("company_id") is not None else None})
    return options


def mark_edited_in_psa(items, held):
    """Give each line whose PSA contract line is held as edited in the PSA its ``psa_edit`` (the held
    operation): the screen shows it purple, as a conflict. Returns every held contract line."""
    by_line = {(str(h["contract_id"]), str(h["service_id"])): h for h in held}
    for item in items:
        key = (str(item.get("psa_contract_id")), str(item.get("psa_service_id")))
        if item.get("status") == "mapped" and key in by_line:
            item["psa_edit"] = by_line[key]
    return list(by_line.values())


class MappingPages(BillingPages):
    """Mixed into the gateway service class (brings the billing pages with it)."""

    # --- the three screens -------------------------------------------------------------------
    @page_route("GET", "/mapping/customers")
    def customers_page(self, request):
        return self._screen_page(request, SCREENS["customers"])

    @page_route("GET", "/mapping/products")
    def products_page(self, request):
        return self._screen_page(request, SCREENS["products"])

    @page_route("GET", "/mapping/lines")
    def lines_page(self, request):
        return self._screen_page(request, SCREENS["lines"])

    # --- row actions ---------------------------------------------------------------------------
    @page_route("POST", "/mapping/customers/map")
    def map_customer_form(self, request):
        view = self.view(request, "billing")

        def action():
            customer_id = required(request.form, "customer_id", "The customer")
            company = self._resolve(view, "company", request.form.get("psa_id"), "PSA company")
            self.call(self.mapping.map_customer, view.principal.tenant_id, customer_id, company["psa_id"],
                      actor=view.actor)
            return f"{request.form.get('label') or customer_id} is mapped to {company['name']}."
        return self.act(request, SCREENS["customers"].path, action)

    @page_route("POST", "/mapping/products/map")
    def map_product_form(self, request):
        view = self.view(request, "billing")

        def action():
            mpn = required(request.form, "mpn", "The MPN")
            service = self._resolve(view, "service", request.form.get("psa_id"), "PSA service")
            rule = _price_rule(request.form)
            self.call(self.mapping.map_product, view.principal.tenant_id, mpn, service["psa_id"], rule["price_rule"],
                      markup_pct=rule["markup_pct"], fixed_price=rule["fixed_price"], actor=view.actor)
            return f"{mpn} is mapped to {service['name']} ({PRICE_RULES[rule['price_rule']].lower()})."
        return self.act(request, SCREENS["products"].path, action)

    @page_route("POST", "/mapping/lines/link")
    def link_line_form(self, request):
        view = self.view(request, "billing")

        def action():
            subscription_id = required(request.form, "subscription_id", "The subscription")
            mpn = required(request.form, "mpn", "The MPN")
            contract = self._resolve(view, "contract", request.form.get("psa_id"), "PSA contract")
            self.call(self.mapping.link_line, view.principal.tenant_id, subscription_id, mpn, contract["psa_id"],
                      actor=view.actor)
            return f"{request.form.get('label') or mpn} is linked to {contract['name']}."
        return self.act(request, SCREENS["lines"].path, action)

    @page_route("POST", "/mapping/<screen>/status")
    def set_status_form(self, request, screen):
        screen, view = _screen(screen), self.view(request, "billing")

        def action():
            key = required(request.form, "key", "The item")
            status = request.form.get("status")
            if status not in ("ignored", "unmapped"):
                raise BadRequest("Choose ignore or unmap.")
            self.call(self.mapping.set_status, view.principal.tenant_id, screen.kind, key, status, actor=view.actor)
            label = request.form.get("label") or key
            return f"{label} is now {'ignored (never billed)' if status == 'ignored' else 'unmapped'}."
        return self.act(request, screen.path, action)

    @page_route("POST", "/mapping/<screen>/bulk")
    def bulk_form(self, request, screen):
        screen, view = _screen(screen), self.view(request, "billing")

        def action():
            act = request.form.get("action")
            if act not in ("accept", "ignore"):
                raise BadRequest("Choose accept or ignore.")
            status = optional(request.form, "status")
            result = self.call(self.mapping.bulk, view.principal.tenant_id, screen.kind, act,
                               search=optional(request.form, "search"), status=status, actor=view.actor)
            count = _count(result)
            done = "accepted" if act == "accept" else "ignored"
            return f"{count} {screen.title.lower()} {done}." if count is not None else f"Bulk {act} done."
        return self.act(request, screen.path, action)

    @page_route("POST", "/mapping/references/refresh")
    def refresh_references_form(self, request):
        view = self.view(request, "billing")

        def action():
            self.call(self.mapping.refresh_references, view.principal.tenant_id)
            return f"PSA companies, contracts and services re-read from {view.tenant['psa'].title()}."
        return self.act(request, SCREENS["customers"].path, action)

    # --- static files (CSP: script-src 'self') ---------------------------------------------------
    @page_route("GET", "/static/<name>")
    def static_file(self, request, name):
        if name not in STATIC_TYPES:
            raise NotFound("no such file")
        return Response((STATIC / name).read_bytes(), content_type=STATIC_TYPES[name],
                        headers={**SECURITY_HEADERS, "Cache-Control": "max-age=300"})

    # --- helpers -------------------------------------------------------------------------------
    def _screen_page(self, request, screen):
        view = self.view(request)
        tenant_id = view.principal.tenant_id
        status = text_arg(request, "status", ("",) + STATUSES)
        search = text_arg(request, "search")
        page = page_number(request)
        lister = getattr(self.mapping, screen.name)
        filters = {"search": search or None, "status": status or None}
        if screen.name == "lines" and text_arg(request, "customer_id"):
            filters["customer_id"] = text_arg(request, "customer_id")
        calls = {"list": (lister, (tenant_id,), {"page": page, "per_page": PER_PAGE, **filters})}
        for s in STATUSES:  # tenant-wide counts, so nothing unmapped goes unseen behind a filter
            calls[s] = (lister, (tenant_id,), {"page": 1, "per_page": 1, "status": s})
        psa = {"autotask": self.autotask, "connectwise": self.connectwise}.get(view.tenant.get("psa"))
        if screen.name == "lines" and psa is not None:
            calls["held"] = (psa.held_lines, (tenant_id,), {})
        if view.can_bill:
            calls["refs"] = (self.mapping.references, (tenant_id, screen.ref_kind), {})
            if screen.ref_kind == "contract":
                calls["companies"] = (self.mapping.references, (tenant_id, "company"), {})
        results, errors = self.gather(calls)
        listing = results["list"] or {"items": [], "total": 0, "page": page, "pages": 0}
        counts = {s: (results[s] or {}).get("total") for s in STATUSES}
        held = mark_edited_in_psa(listing.get("items") or [], results.get("held") or [])
        options = reference_options(results.get("refs"), results.get("companies"))
        by_company = {}
        for option in options:
            by_company.setdefault(option["company_id"], []).append(option)
        return self.render(view, f"mapping_{screen.name}.html", active=screen.name, screen=screen,
                           listing=listing, items=listing.get("items") or [], counts=counts, status=status,
                           search=search, customer_id=filters.get("customer_id"), errors=errors, options=options,
                           by_company=by_company, select_limit=SELECT_LIMIT, price_rules=PRICE_RULES,
                           rule_text=rule_text, line_key=line_key, back=view.url(), held=held)

    def _resolve(self, view, kind, text, label):
        """The PSA record a person chose: its id (from the list) or its exact name, typed."""
        text = (text or "").strip()
        if not text:
            raise BadRequest(f"Choose a {label} first.")
        refs = self.call(self.mapping.references, view.principal.tenant_id, kind) or []
        for ref in refs:
            if str(ref["psa_id"]) == text:
                return {"psa_id": str(ref["psa_id"]), "name": ref.get("name") or text}
        named = [r for r in refs if str(r.get("name") or "").strip().lower() == text.lower()]
        if len(named) == 1:
            return {"psa_id": str(named[0]["psa_id"]), "name": named[0]["name"]}
        if len(named) > 1:
            raise BadRequest(f"Several {label}s are called {text!r}; pick one from the list.")
        raise BadRequest(f"There is no {label} {text!r}; pick one from the list (or refresh the PSA records).")


def _price_rule(form):
    data = {"psa_service_id": "-", "price_rule": (form.get("price_rule") or "psa_catalog").strip(),
            "markup_pct": optional(form, "markup_pct"), "fixed_price": optional(form, "fixed_price")}
    if data["price_rule"] == "cost_plus" and data["markup_pct"] is None:
        raise BadRequest("Cost plus needs a markup % (for example 15).")
    if data["price_rule"] == "fixed" and data["fixed_price"] is None:
        raise BadRequest("A fixed price rule needs the price.")
    if data["price_rule"] != "cost_plus":
        data["markup_pct"] = None
    if data["price_rule"] != "fixed":
        data["fixed_price"] = None
    return _json_safe(schemas.MapProduct().load(data))


def _count(result):
    if isinstance(result, int):
        return result
    if isinstance(result, dict):
        for key in ("changed", "count", "updated", "accepted", "ignored", "total"):
            if isinstance(result.get(key), int):
                return result[key]
    return None
