"""The Linked Subscriptions report's mapping side: every billable line (customer, product and
contract link all mapped) with its PSA contract line and the price that contract line bills.

What the PSA shows and when it was last posted come from the PSA service (the gateway joins them:
``<psa>.line_states``). Pages for the screen (by customer name, with a count); a keyset walk by
(subscription_id, mpn) for the CSV export, so a 50,000-line export is 250 short queries, not 250
ever-longer offsets.
"""
from sqlalchemy import and_, case, func, literal, select, tuple_

from common.errors import BadRequest
from common.paging import page_params
from services.mapping import models as m
from services.mapping import store
from services.mapping.domain import MAPPED
from services.mapping.queries import _line_filter, _page, _ref_join


def _linked_query(tenant_id, search=None):
    ln, k, c, p = m.lines, m.line_links, m.customers, m.products
    cm, pm, dl = m.customer_mappings, m.product_mappings, m.desired_lines
    contract, on_contract = _ref_join("contract", k.c.psa_contract_id)
    service, on_service = _ref_join("service", pm.c.psa_service_id)
    query = (select(ln.c.subscription_id, ln.c.mpn, ln.c.customer_id, c.c.name.label("customer_name"),
                    p.c.name.label("product_name"), ln.c.quantity, ln.c.status.label("line_status"), ln.c.currency,
                    ln.c.unit_price.label("line_unit_price"), ln.c.unit_cost.label("line_unit_cost"),
                    k.c.psa_contract_id, contract.c.name.label("psa_contract_name"), pm.c.psa_service_id,
                    service.c.name.label("psa_service_name"), dl.c.quantity.label("desired_quantity"),
                    dl.c.unit_price, dl.c.unit_cost, dl.c.status.label("desired_status"))
             .join(k, and_(k.c.tenant_id == ln.c.tenant_id, k.c.subscription_id == ln.c.subscription_id,
                           k.c.mpn == ln.c.mpn, k.c.status == MAPPED))
             .join(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id,
                            cm.c.status == MAPPED))
             .join(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn, pm.c.status == MAPPED))
             .outerjoin(c, and_(c.c.tenant_id == ln.c.tenant_id, c.c.customer_id == ln.c.customer_id))
             .outerjoin(p, and_(p.c.tenant_id == ln.c.tenant_id, p.c.mpn == ln.c.mpn))
             .outerjoin(contract, on_contract)
             .outerjoin(service, on_service)
             .outerjoin(dl, and_(dl.c.tenant_id == ln.c.tenant_id, dl.c.psa_contract_id == k.c.psa_contract_id,
                                 dl.c.psa_service_id == pm.c.psa_service_id))
             .where(ln.c.tenant_id == tenant_id))
    return _line_filter(query, tenant_id, search, None), c


def _item(row):
    d = dict(row._mapping)
    # the contract line's price (the tenant's price rule) is what is billed; a line not planned yet
    # shows the marketplace's own
    if d["unit_price"] is None:
        d["unit_price"] = d["line_unit_price"]
    if d["unit_cost"] is None:
        d["unit_cost"] = d["line_unit_cost"]
    return {k: store.json_safe(v) for k, v in d.items()}


def linked_lines(session, tenant_id, page=1, per_page=50, search=None):
    """A page of the report, by customer name then subscription."""
    query, c = _linked_query(tenant_id, search)
    ln = m.lines
    query = query.order_by(func.lower(func.coalesce(c.c.name, ln.c.customer_id)), ln.c.customer_id,
                           ln.c.subscription_id, ln.c.mpn)
    return _page(session, query, page, per_page, _item)


def linked_lines_after(session, tenant_id, after=None, per_page=200):
    """The next ``per_page`` lines after the (subscription_id, mpn) ``after`` (None: from the start),
    in key order; ``next`` is the key to pass next time (None at the end)."""
    _, per_page = page_params(1, per_page)
    query, _ = _linked_query(tenant_id)
    ln = m.lines
    if after is not None:
        if not (isinstance(after, (list, tuple)) and len(after) == 2 and all(isinstance(x, str) for x in after)):
            raise BadRequest("after must be [subscription_id, mpn]")
        query = query.where(tuple_(ln.c.subscription_id, ln.c.mpn) > tuple_(*after))
    rows = session.execute(query.order_by(ln.c.subscription_id, ln.c.mpn).limit(per_page)).all()
    items = [_item(r) for r in rows]
    return {"items": items, "per_page": per_page,
            "next": [items[-1]["subscription_id"], items[-1]["mpn"]] if len(items) == per_page else None}


# --- what is not billed yet, and the revenue it holds back --------------------------------------
BILLING = ("active", "pending")


def not_billed(session, tenant_id, page=1, per_page=50):
    """Per customer: the lines that would bill (active or pending, quantity > 0) but are not billable
    because their customer, product or contract link is not mapped (unmapped, suggested or in
    conflict; ignored ones are left out: a person chose not to bill them), with their seats and the
    monthly amount at the marketplace price. Largest amount first; ``totals`` over every customer."""
    page, per_page = page_params(page, per_page)
    ln, k, c, cm, pm = m.lines, m.line_links, m.customers, m.customer_mappings, m.product_mappings
    link = func.coalesce(k.c.status, "unmapped")
    cust = func.coalesce(cm.c.status, "unmapped")
    prod = func.coalesce(pm.c.status, "unmapped")
    amount = ln.c.quantity * func.coalesce(ln.c.unit_price, 0)
    blocked = (select(ln.c.customer_id, ln.c.currency, ln.c.quantity, amount.label("amount"),
                      case((cust != MAPPED, literal(1)), else_=literal(0)).label("by_customer"),
                      case((prod != MAPPED, literal(1)), else_=literal(0)).label("by_product"),
                      case((link != MAPPED, literal(1)), else_=literal(0)).label("by_link"))
               .outerjoin(k, and_(k.c.tenant_id == ln.c.tenant_id, k.c.subscription_id == ln.c.subscription_id,
                                  k.c.mpn == ln.c.mpn))
               .outerjoin(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id))
               .outerjoin(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn))
               .where(ln.c.tenant_id == tenant_id, ln.c.status.in_(BILLING), ln.c.quantity > 0,
                      ~and_(link == MAPPED, cust == MAPPED, prod == MAPPED),
                      link != "ignored", cust != "ignored", prod != "ignored")
               .subquery())
    per_customer = (select(blocked.c.customer_id, c.c.name.label("customer_name"), blocked.c.currency,
                           func.count().label("lines"), func.sum(blocked.c.quantity).label("seats"),
                           func.sum(blocked.c.amount).label("amount"),
                           func.sum(blocked.c.by_customer).label("customer_not_mapped"),
                           func.sum(blocked.c.by_product).label("product_not_mapped"),
                           func.sum(blocked.c.by_link).label("link_not_mapped"))
                    .outerjoin(c, and_(c.c.tenant_id == tenant_id, c.c.customer_id == blocked.c.customer_id))
                    .group_by(blocked.c.customer_id, c.c.name, blocked.c.currency)
                    .order_by(func.sum(blocked.c.amount).desc(), blocked.c.customer_id))
    listing = _page(session, per_customer, page, per_page, lambda r: {k: store.json_safe(v) for k, v in
                                                                       r._mapping.items()})
    totals = session.execute(select(blocked.c.currency, func.count().label("lines"),
                                    func.count(func.distinct(blocked.c.customer_id)).label("customers"),
                                    func.sum(blocked.c.quantity).label("seats"), func.sum(blocked.c.amount).label("amount"))
                             .group_by(blocked.c.currency).order_by(blocked.c.currency)).all()
    listing["totals"] = [{k: store.json_safe(v) for k, v in r._mapping.items()} for r in totals]
    listing["lines_known"] = session.execute(select(func.count()).select_from(
        select(ln.c.mpn).where(ln.c.tenant_id == tenant_id).limit(1).subquery())).scalar_one() > 0
    return listing
