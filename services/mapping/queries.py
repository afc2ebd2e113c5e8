"""The list screens: customers, products, subscription lines, approvals, desired lines, price
overrides. Every filter on the tenant first (indexes tenant+status and tenant+lower(name)); a
search is a case-insensitive substring.

The three mapping screens are read in two or three statements (`_keyed_page`). One statement
joining every table a line shows (eight) over a whole tenant made a page of 50 lines cost 0.3-0.9 s
at 40,000 lines, whichever join method: the planner's estimates of joins on tenant_id are far off
(it expects a tenth of the rows), so it either hashes every table in full and sorts the lot, or
runs nested loops over tens of thousands of rows. Instead:
1. the page's keys, from a narrow query with only the tables its filter needs (for lines: lines and
   line_links; customer or product names only for a search, PSA services and desired lines only
   for the mapped / conflict tabs), in key order - a short index walk for the first pages;
2. the columns shown, for those <= per_page keys only (primary-key lookups);
3. the total, by counting the narrow query - skipped when the page shows where the list ends.
All three read one snapshot (REPEATABLE READ). Every join of these statements has an index on its inner side, so even a planner that does not
know a new tenant's size yet (it may estimate one row) only ever walks indexes.
"""
from sqlalchemy import and_, case, exists, func, literal, or_, select, tuple_, union_all

from common.errors import BadRequest, NotFound
from common.paging import envelope, page_params
from services.mapping import models as m
from services.mapping import store
from services.mapping.domain import CONFLICT, MAPPED, MAPPING_STATUSES, LineMapping, blocking_reasons

APPROVAL_STATUSES = ("pending", "approved", "rejected", "superseded")


def _status(status, allowed=MAPPING_STATUSES):
    if status in (None, ""):
        return None
    if status not in allowed:
        raise BadRequest(f"status must be one of {', '.join(allowed)}")
    return status


def _pattern(search):
    if search is None:
        return None
    if not isinstance(search, str):
        raise BadRequest("search must be text")
    search = search.strip().lower()
    if not search:
        return None
    escaped = search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _page(session, query, page, per_page, to_item):
    page, per_page = page_params(page, per_page)
    store.bulk_mode(session)   # hash joins: robust when the planner does not know a new tenant yet
    total = session.execute(select(func.count()).select_from(query.order_by(None).subquery())).scalar_one()
    rows = session.execute(query.limit(per_page).offset((page - 1) * per_page)).all()
    return envelope([to_item(r) for r in rows], total, page, per_page)


def _keyed_page(session, keys, details, page, per_page, to_item):
    """A page of a mapping screen (see the module's docstring). ``keys``: the filtered narrow select
    whose columns are the sort (unique, the item's key last); ``details(key_rows)``: the full select
    of those rows, in the same order."""
    page, per_page = page_params(page, per_page)
    offset = (page - 1) * per_page
    if not session.in_transaction():  # one snapshot for the keys, the rows and the count
        session.connection(execution_options={"isolation_level": "REPEATABLE READ"})
    key_rows = session.execute(keys.order_by(*keys.selected_columns).limit(per_page).offset(offset)).all()
    rows = session.execute(details(key_rows)).all() if key_rows else []
    if 0 < len(key_rows) < per_page or (not key_rows and page == 1):
        total = offset + len(key_rows)
    else:
        total = session.execute(select(func.count()).select_from(keys.order_by(None).subquery())).scalar_one()
    return envelope([to_item(r) for r in rows], total, page, per_page)


def _ref_join(kind, id_column):
    r = m.psa_references.alias(f"ref_{kind}")
    return r, and_(r.c.tenant_id == id_column.table.c.tenant_id, r.c.kind == kind, r.c.psa_id == id_column)


# --- customers -----------------------------------------------------------------------------------
def _customers_query(tenant_id, search=None, status=None):
    c, cm = m.customers, m.customer_mappings
    ref, on = _ref_join("company", cm.c.psa_company_id)
    query = (select(c.c.customer_id, c.c.name, c.c.domain, cm.c.status, cm.c.psa_company_id,
                    ref.c.name.label("psa_company_name"), cm.c.score, cm.c.method, cm.c.reason)
             .join(cm, and_(cm.c.tenant_id == c.c.tenant_id, cm.c.customer_id == c.c.customer_id))
             .outerjoin(ref, on)
             .where(c.c.tenant_id == tenant_id))
    return _customer_filter(query, search, status).order_by(*CUSTOMER_ORDER)


CUSTOMER_ORDER = (func.lower(m.customers.c.name), m.customers.c.customer_id)


def _customer_keys(tenant_id, search=None, status=None):
    c, cm = m.customers, m.customer_mappings
    query = (select(func.lower(c.c.name).label("sort_name"), c.c.customer_id)
             .join(cm, and_(cm.c.tenant_id == c.c.tenant_id, cm.c.customer_id == c.c.customer_id))
             .where(c.c.tenant_id == tenant_id))
    return _customer_filter(query, search, status)


def _customer_filter(query, search, status):
    c, cm = m.customers, m.customer_mappings
    status = _status(status)
    if status:
        query = query.where(cm.c.status == status)
    pattern = _pattern(search)
    if pattern:
        query = query.where(or_(func.lower(c.c.name).like(pattern), func.lower(c.c.domain).like(pattern),
                                c.c.customer_id == search.strip()))
    return query


def customer_item(row):
    d = dict(row._mapping)
    d["score"] = store.score_out(d["score"])
    return d


def customers(session, tenant_id, page=1, per_page=50, search=None, status=None):
    def details(keys):
        return _customers_query(tenant_id).where(m.customers.c.customer_id.in_([k.customer_id for k in keys]))
    return _keyed_page(session, _customer_keys(tenant_id, search, status), details, page, per_page, customer_item)


def customer(session, tenant_id, customer_id):
    row = session.execute(_customers_query(tenant_id).where(m.customers.c.customer_id == customer_id)).first()
    if row is None:
        raise NotFound(f"no such customer {customer_id!r}")
    return customer_item(row)


def customer_selection(tenant_id, search=None, status=None):
    """The customer ids a bulk action works on (the list's filter)."""
    return _customer_keys(tenant_id, search, status).with_only_columns(m.customers.c.customer_id)


# --- products ------------------------------------------------------------------------------------
def _products_query(tenant_id, search=None, status=None):
    p, pm = m.products, m.product_mappings
    ref, on = _ref_join("service", pm.c.psa_service_id)
    query = (select(p.c.mpn, p.c.name, pm.c.status, pm.c.psa_service_id, ref.c.name.label("psa_service_name"),
                    pm.c.price_rule, pm.c.markup_pct, pm.c.fixed_price, pm.c.score, pm.c.method, pm.c.reason)
             .join(pm, and_(pm.c.tenant_id == p.c.tenant_id, pm.c.mpn == p.c.mpn))
             .outerjoin(ref, on)
             .where(p.c.tenant_id == tenant_id))
    return _product_filter(query, search, status).order_by(*PRODUCT_ORDER)


PRODUCT_ORDER = (func.lower(m.products.c.name), m.products.c.mpn)


def _product_keys(tenant_id, search=None, status=None):
    p, pm = m.products, m.product_mappings
    query = (select(func.lower(p.c.name).label("sort_name"), p.c.mpn)
             .join(pm, and_(pm.c.tenant_id == p.c.tenant_id, pm.c.mpn == p.c.mpn))
             .where(p.c.tenant_id == tenant_id))
    return _product_filter(query, search, status)


def _product_filter(query, search, status):
    p, pm = m.products, m.product_mappings
    status = _status(status)
    if status:
        query = query.where(pm.c.status == status)
    pattern = _pattern(search)
    if pattern:
        query = query.where(or_(func.lower(p.c.name).like(pattern), func.lower(p.c.mpn).like(pattern)))
    return query


def product_item(row):
    d = dict(row._mapping)
    d["score"] = store.score_out(d["score"])
    d["markup_pct"] = store.json_safe(d["markup_pct"])
    d["fixed_price"] = store.json_safe(d["fixed_price"])
    return d


def products(session, tenant_id, page=1, per_page=50, search=None, status=None):
    def details(keys):
        return _products_query(tenant_id).where(m.products.c.mpn.in_([k.mpn for k in keys]))
    return _keyed_page(session, _product_keys(tenant_id, search, status), details, page, per_page, product_item)


def product(session, tenant_id, mpn):
    row = session.execute(_products_query(tenant_id).where(m.products.c.mpn == mpn)).first()
    if row is None:
        raise NotFound(f"no such product {mpn!r}")
    return product_item(row)


def product_selection(tenant_id, search=None, status=None):
    return _product_keys(tenant_id, search, status).with_only_columns(m.products.c.mpn)


# --- subscription lines --------------------------------------------------------------------------
def _lines_query(tenant_id, search=None, status=None, customer_id=None):
    """Every column a line shows (status: the link's, or conflict when its contract line is)."""
    ln, k, c, p = m.lines, m.line_links, m.customers, m.products
    cm, pm, dl = m.customer_mappings, m.product_mappings, m.desired_lines
    ref, on = _ref_join("contract", k.c.psa_contract_id)
    shown = case((and_(k.c.status == MAPPED, dl.c.status == CONFLICT), literal(CONFLICT)), else_=k.c.status)
    query = (select(ln.c.subscription_id, ln.c.mpn, ln.c.customer_id, c.c.name.label("customer_name"),
                    p.c.name.label("product_name"), ln.c.quantity, ln.c.status.label("line_status"),
                    shown.label("status"), k.c.psa_contract_id, ref.c.name.label("psa_contract_name"), ln.c.seen_at,
                    k.c.status.label("link_status"), cm.c.status.label("customer_status"), cm.c.psa_company_id,
                    pm.c.status.label("product_status"), pm.c.psa_service_id, k.c.reason.label("link_reason"),
                    cm.c.reason.label("customer_reason"), pm.c.reason.label("product_reason"),
                    dl.c.status.label("group_status"),
                    dl.c.reasons.label("group_reasons"))
             .join(k, and_(k.c.tenant_id == ln.c.tenant_id, k.c.subscription_id == ln.c.subscription_id,
                           k.c.mpn == ln.c.mpn))
             .outerjoin(c, and_(c.c.tenant_id == ln.c.tenant_id, c.c.customer_id == ln.c.customer_id))
             .outerjoin(p, and_(p.c.tenant_id == ln.c.tenant_id, p.c.mpn == ln.c.mpn))
             .outerjoin(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id))
             .outerjoin(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn))
             .outerjoin(ref, on)
             .outerjoin(dl, and_(dl.c.tenant_id == ln.c.tenant_id, dl.c.psa_contract_id == k.c.psa_contract_id,
                                 dl.c.psa_service_id == pm.c.psa_service_id))
             .where(ln.c.tenant_id == tenant_id))
    status = _status(status)
    if status:
        query = query.where(shown == status)
    return _line_filter(query, tenant_id, search, customer_id).order_by(*LINE_ORDER)


LINE_ORDER = (m.lines.c.subscription_id, m.lines.c.mpn)


def _line_keys(tenant_id, search=None, status=None, customer_id=None):
    """(subscription_id, mpn) of the lines a filter selects, joining only what the filter needs.

    The status shown is the link's, except "conflict" for a mapped link whose contract line
    (desired_lines by contract and the product's PSA service) is in conflict. So every tab but
    mapped and conflict is the link's status alone (index tenant+status); mapped excludes those
    contract lines, and conflict adds their links to the links in conflict themselves (from the
    few conflicting contract lines, index tenant+status)."""
    ln, k, pm, dl = m.lines, m.line_links, m.product_mappings, m.desired_lines

    def linked():
        return (select(ln.c.subscription_id, ln.c.mpn)
                .join(k, and_(k.c.tenant_id == ln.c.tenant_id, k.c.subscription_id == ln.c.subscription_id,
                              k.c.mpn == ln.c.mpn))
                .where(ln.c.tenant_id == tenant_id))

    def by_product(query):
        return query.join(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn))

    in_conflict = exists().where(dl.c.tenant_id == tenant_id, dl.c.status == CONFLICT,
                                 dl.c.psa_contract_id == k.c.psa_contract_id, dl.c.psa_service_id == pm.c.psa_service_id)
    status = _status(status)
    if status == MAPPED:
        # a mapped link whose product has no mapping row has no contract line: outer join
        query = (linked().outerjoin(pm, and_(pm.c.tenant_id == ln.c.tenant_id, pm.c.mpn == ln.c.mpn))
                 .where(k.c.status == MAPPED, ~in_conflict))
    elif status == CONFLICT:
        own = _line_filter(linked().where(k.c.status == CONFLICT), tenant_id, search, customer_id)
        group = _line_filter(by_product(linked()).where(k.c.status == MAPPED, in_conflict), tenant_id, search,
                             customer_id)
        both = union_all(own, group).subquery()
        return select(both.c.subscription_id, both.c.mpn)
    else:
        query = linked().where(k.c.status == status) if status else linked()
    return _line_filter(query, tenant_id, search, customer_id)


def _line_filter(query, tenant_id, search, customer_id):
    ln, c, p = m.lines, m.customers, m.products
    if customer_id not in (None, ""):
        query = query.where(ln.c.customer_id == str(customer_id))
    pattern = _pattern(search)
    if pattern:
        named_customers = select(c.c.customer_id).where(c.c.tenant_id == tenant_id, func.lower(c.c.name).like(pattern))
        named_products = select(p.c.mpn).where(p.c.tenant_id == tenant_id, func.lower(p.c.name).like(pattern))
        query = query.where(or_(ln.c.subscription_id == search.strip(), func.lower(ln.c.mpn).like(pattern),
                                ln.c.customer_id.in_(named_customers), ln.c.mpn.in_(named_products)))
    return query


def line_item(row):
    d = dict(row._mapping)
    # psa_service_id stays in the item: with the contract it names the PSA contract line
    mapping = LineMapping(d.pop("customer_status") or "unmapped", d.pop("product_status") or "unmapped",
                          d.pop("link_status") or "unmapped", d.pop("psa_company_id"), d["psa_service_id"],
                          d["psa_contract_id"])
    details = {"customer": d.pop("customer_reason"), "product": d.pop("product_reason"),
               "contract link": d.pop("link_reason")}
    reasons = [_with_detail(r, details) for r in blocking_reasons(mapping)]
    group_status, group_reasons = d.pop("group_status"), d.pop("group_reasons")
    if not reasons and group_status == "conflict":
        reasons = [f"contract line in conflict: {r}" for r in group_reasons or []]
    d["billable"] = not reasons
    d["blocking_reasons"] = reasons
    d["seen_at"] = store.json_safe(d["seen_at"])
    return d


def _with_detail(reason, details):
    """'contract link is conflict' -> 'contract link is conflict: PSA contract 202 is inactive'."""
    for label, detail in details.items():
        if reason.startswith(f"{label} is ") and detail and not reason.endswith("without a PSA id"):
            return f"{reason}: {detail}"
    return reason


def lines(session, tenant_id, page=1, per_page=50, search=None, status=None, customer_id=None):
    def details(keys):
        ln = m.lines
        return _lines_query(tenant_id).where(ln.c.subscription_id.in_(sorted({k.subscription_id for k in keys})),
                                             tuple_(ln.c.subscription_id, ln.c.mpn).in_(
                                                 [(k.subscription_id, k.mpn) for k in keys]))
    return _keyed_page(session, _line_keys(tenant_id, search, status, customer_id), details, page, per_page,
                       line_item)


def line(session, tenant_id, subscription_id, mpn):
    row = session.execute(_lines_query(tenant_id).where(m.lines.c.subscription_id == subscription_id,
                                                        m.lines.c.mpn == mpn)).first()
    if row is None:
        raise NotFound(f"no such subscription line {subscription_id}/{mpn}")
    return line_item(row)


def line_selection(tenant_id, search=None, status=None):
    return _line_keys(tenant_id, search, status)


# --- approvals, desired lines, overrides ---------------------------------------------------------
APPROVAL_FIELDS = ("id", "contract_id", "service_id", "kind", "quantity_before", "quantity_after", "unit_price",
                   "effective_date", "reasons", "status", "note", "decided_by", "decided_at", "created_at")


def approval_item(row):
    d = {f: row._mapping[f] for f in APPROVAL_FIELDS}
    d["unit_price_before"] = row._mapping["unit_price_before"]
    d["unit_cost"] = row._mapping["unit_cost"]
    d["effective_date_override"] = row._mapping["effective_date_override"]
    d["contract_name"] = row._mapping["contract_name"]
    d["service_name"] = row._mapping["service_name"]
    return store.json_safe(d)


def _with_names(query, table, contract_col, service_col):
    rc, on_c = _ref_join("contract", contract_col)
    rs, on_s = _ref_join("service", service_col)
    return (query.add_columns(rc.c.name.label("contract_name"), rs.c.name.label("service_name"))
            .outerjoin(rc, on_c).outerjoin(rs, on_s))


def approvals(session, tenant_id, page=1, per_page=50, status="pending"):
    status = _status(status, APPROVAL_STATUSES)
    ap = m.approvals
    query = _with_names(select(ap), ap, ap.c.contract_id, ap.c.service_id).where(ap.c.tenant_id == tenant_id)
    if status:
        query = query.where(ap.c.status == status)
    query = query.order_by(ap.c.created_at.desc(), ap.c.id)
    return _page(session, query, page, per_page, approval_item)


DESIRED_FIELDS = ("company_id", "quantity", "unit_price", "unit_cost", "currency", "effective_date", "version",
                  "emitted_at", "status", "reasons", "lines", "updated_at")


def desired_item(row):
    d = {"contract_id": row.psa_contract_id, "contract_name": row.contract_name,
         "service_id": row.psa_service_id, "service_name": row.service_name}
    d.update({f: row._mapping[f] for f in DESIRED_FIELDS})
    return store.json_safe(d)


def desired_lines(session, tenant_id, page=1, per_page=50):
    dl = m.desired_lines
    query = (_with_names(select(*[dl.c[c] for c in ("psa_contract_id", "psa_service_id") + DESIRED_FIELDS]), dl,
                         dl.c.psa_contract_id, dl.c.psa_service_id)
             .where(dl.c.tenant_id == tenant_id).order_by(dl.c.psa_contract_id, dl.c.psa_service_id))
    return _page(session, query, page, per_page, desired_item)


def price_overrides(session, tenant_id):
    po, c, p = m.price_overrides, m.customers, m.products
    rows = session.execute(
        select(po.c.customer_id, c.c.name.label("customer_name"), po.c.mpn, p.c.name.label("product_name"),
               po.c.price_rule, po.c.markup_pct, po.c.fixed_price, po.c.decided_by, po.c.updated_at)
        .outerjoin(c, and_(c.c.tenant_id == po.c.tenant_id, c.c.customer_id == po.c.customer_id))
        .outerjoin(p, and_(p.c.tenant_id == po.c.tenant_id, p.c.mpn == po.c.mpn))
        .where(po.c.tenant_id == tenant_id).order_by(po.c.customer_id, po.c.mpn)).all()
    return [store.json_safe(dict(r._mapping)) for r in rows]


def price_override(session, tenant_id, customer_id, mpn):
    for item in price_overrides(session, tenant_id):
        if item["customer_id"] == customer_id and item["mpn"] == mpn:
            return item
    raise NotFound(f"no price override for customer {customer_id!r} and product {mpn!r}")
