"""Portal report: Linked Subscriptions - every billable line (customer, product and contract
mapped) with what the marketplace says, what the PSA shows (as of our last read or write), the
price it bills, the margin and whether it is in sync; as a page and as a CSV file.

The mapping service gives the lines (``linked_lines``), the tenant's PSA service what it knows of
their contract lines (``line_states``); ``report_rows`` joins them (pure, unit-tested).
"""
import csv
import datetime as dt
import decimal
import io

from werkzeug.wrappers import Response

from gateway.portal import SECURITY_HEADERS
from gateway.portal_support import PER_PAGE, PortalSupport, page_number, page_route, text_arg

SYNC_LABELS = {"in_sync": "In sync", "pending": "Pending", "waiting": "Retrying", "held": "Edited in PSA",
               "failed": "Failed", None: "Not posted yet"}
SYNC_BADGES = {"in_sync": "yes", "pending": "pending", "waiting": "pending", "held": "conflict", "failed": "no",
               None: "neutral"}
CSV_COLUMNS = ("customer_id", "customer_name", "subscription_id", "mpn", "product_name", "line_status",
               "marketplace_quantity", "psa_contract_id", "psa_contract_name", "psa_service_id", "psa_service_name",
               "contract_line_quantity", "psa_quantity", "currency", "unit_price", "unit_cost", "monthly_amount",
               "monthly_margin", "margin_percent", "sync_status", "last_posted_at")
CSV_MAX_LINES = 100_000
WALK = 200   # lines per mapping call (the page size limit)


def _dec(value):
    if value in (None, ""):
        return None
    try:
        return decimal.Decimal(str(value))
    except decimal.InvalidOperation:
        return None


def report_rows(lines, states):
    """The report's rows: each line with its contract line's PSA state (``states``: the PSA service's
    ``line_states``, keyed "contract/service"), amount and margin at the billed price."""
    rows = []
    for line in lines:
        state = states.get(f"{line.get('psa_contract_id')}/{line.get('psa_service_id')}") or {}
        status = state.get("status")
        price, cost = _dec(line.get("unit_price")), _dec(line.get("unit_cost"))
        qty = int(line.get("quantity") or 0)
        amount = None if price is None else (price * qty).quantize(decimal.Decimal("0.01"))
        margin = None if price is None or cost is None else ((price - cost) * qty).quantize(decimal.Decimal("0.01"))
        percent = None
        if price not in (None, 0) and cost is not None:
            percent = ((price - cost) / price * 100).quantize(decimal.Decimal("0.1"))
        rows.append({**line, "marketplace_quantity": qty, "contract_line_quantity": line.get("desired_quantity"),
                     "psa_quantity": state.get("psa_quantity"), "last_posted_at": state.get("last_posted_at"),
                     "sync_status": status, "sync_label": SYNC_LABELS.get(status, status),
                     "sync_badge": SYNC_BADGES.get(status, "neutral"), "status_message": state.get("status_message"),
                     "monthly_amount": amount, "monthly_margin": margin, "margin_percent": percent})
    return rows


def csv_cell(value):
    """A spreadsheet must not run what a customer or product name holds: a cell that starts like a
    formula is written as text."""
    if value is None:
        return ""
    text = str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") and not _is_number(text) else text


def _is_number(text):
    try:
        decimal.Decimal(text)
        return True
    except decimal.InvalidOperation:
        return False


class ReportPages(PortalSupport):
    def _states(self, view, lines):
        psa = {"autotask": self.autotask, "connectwise": self.connectwise}.get(view.tenant.get("psa"))
        keys = sorted({(str(x["psa_contract_id"]), str(x["psa_service_id"])) for x in lines
                       if x.get("psa_contract_id") and x.get("psa_service_id")})
        if psa is None or not keys:
            return {}
        return self.call(psa.line_states, view.principal.tenant_id, [list(k) for k in keys]) or {}

    @page_route("GET", "/reports/linked")
    def linked_report_page(self, request):
        view = self.view(request)
        search = text_arg(request, "search")
        listing, error = self.attempt(self.mapping.linked_lines, view.principal.tenant_id, page=page_number(request),
                                      per_page=PER_PAGE, search=search or None)
        listing = listing or {"items": [], "total": 0, "page": 1, "pages": 0}
        errors = [error] if error else []
        states = {}
        if listing["items"]:
            try:
                states = self._states(view, listing["items"])
            except Exception as exc:  # noqa: BLE001 - the PSA side may be down: show the lines anyway
                errors.append(f"What {view.tenant.get('psa', 'the PSA')} shows is not available right now "
                              f"({getattr(exc, 'message', 'no answer')}).")
        return self.render(view, "reports_linked.html", active="reports", listing=listing, search=search,
                           rows=report_rows(listing["items"], states), errors=errors)

    @page_route("GET", "/reports/not-billed")
    def not_billed_report_page(self, request):
        view = self.view(request)
        listing, error = self.attempt(self.mapping.not_billed, view.principal.tenant_id, page=page_number(request),
                                      per_page=PER_PAGE)
        listing = listing or {"items": [], "total": 0, "page": 1, "pages": 0, "totals": []}
        return self.render(view, "reports_not_billed.html", active="reports", listing=listing,
                           items=listing.get("items") or [], totals=listing.get("totals") or [],
                           errors=[error] if error else [])

    @page_route("GET", "/reports/linked.csv")
    def linked_report_csv(self, request):
        view = self.view(request)
        out = io.StringIO()
        writer = csv.writer(out)
        writer.writerow(CSV_COLUMNS)
        after, written = None, 0
        while written < CSV_MAX_LINES:
            chunk = self.call(self.mapping.linked_lines, view.principal.tenant_id, per_page=WALK, after=after,
                              walk=True)
            items = chunk.get("items") or []
            for row in report_rows(items, self._states(view, items)):
                writer.writerow([csv_cell(row.get(c)) for c in CSV_COLUMNS])
            written += len(items)
            after = chunk.get("next")
            if not after:
                break
        name = f"linked-subscriptions-{dt.date.today().isoformat()}.csv"
        headers = {**SECURITY_HEADERS, "Content-Disposition": f'attachment; filename="{name}"'}
        return Response(out.getvalue(), status=200, mimetype="text/csv", headers=headers)
