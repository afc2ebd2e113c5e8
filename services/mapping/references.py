"""The PSA reference cache and what it feeds: suggestions and reference checks.

The cache (psa_references) is a copy of the tenant's PSA companies, contracts and services as the
PSA service's browse_references returns them; a refresh replaces it whole. Matchers (domain
CompanyMatcher / ServiceMatcher) are built once per refresh and kept in memory per tenant.
"""
import datetime as dt
import logging
from collections import OrderedDict

from sqlalchemy import and_, delete, func, or_, select, tuple_, update

from common.errors import BadRequest
from services.mapping import models as m
from services.mapping import store
from services.mapping.domain import (CONFLICT, MAPPED, SUGGESTED, UNMAPPED, CompanyMatcher, PsaCompany,
                                     PsaContract, PsaService, ServiceMatcher, check_mapping, suggest_contract,
                                     to_decimal)

log = logging.getLogger(__name__)

KINDS = ("company", "contract", "service")


# --- from browse_references to rows --------------------------------------------------------------
def period_months(billing_cycle):
    """Autotask contractPeriodType / ConnectWise billing cycle name -> months per billing period."""
    text = str(billing_cycle or "").strip().lower()
    if text in ("q", "quarterly") or "quarter" in text:
        return 3
    if text in ("s", "semi-annual", "semiannual", "semi-annually") or "semi" in text or "half" in text:
        return 6
    if text in ("y", "a", "yearly", "annual", "annually") or "year" in text or "annual" in text:
        return 12
    return 1


def _date(value):
    if not value:
        return None
    if isinstance(value, dt.date):
        return value
    try:
        return dt.date.fromisoformat(str(value)[:10])
    except ValueError:
        return None


def reference_row(tenant_id, psa, kind, item, refreshed_at):
    domains = [d for d in (item.get("web_address"), item.get("domain")) if d]
    if kind == "company" and item.get("domains"):
        domains += [d for d in item["domains"] if d]
    return {"tenant_id": tenant_id, "kind": kind, "psa_id": str(item["psa_id"]), "psa": psa,
            "name": str(item.get("name") or item["psa_id"])[:300], "active": bool(item.get("active", True)),
            "company_id": None if item.get("company_id") is None else str(item["company_id"]),
            "recurring": bool(item.get("recurring", True)), "start_date": _date(item.get("start_date")),
            "period_months": int(item.get("period_months") or period_months(item.get("billing_cycle"))),
            "billing_cycle": item.get("billing_cycle"), "unit_price": to_decimal(item.get("unit_price")),
            "unit_cost": to_decimal(item.get("unit_cost")), "identifier": item.get("identifier"),
            "domains": domains, "refreshed_at": refreshed_at}


def replace_cache(session, tenant_id, psa, fetched):
    """Replace the tenant's cache with what the PSA returned: {kind: [items]} -> counts."""
    refreshed_at = store.now()
    session.execute(delete(m.psa_references).where(m.psa_references.c.tenant_id == tenant_id))
    counts = {}
    for kind in KINDS:
        rows, seen = [], set()
        for item in fetched.get(kind) or []:
            row = reference_row(tenant_id, psa, kind, item, refreshed_at)
            if row["psa_id"] not in seen:
                seen.add(row["psa_id"])
                rows.append(row)
        for i in range(0, len(rows), 1000):
            session.execute(m.psa_references.insert(), rows[i:i + 1000])
        counts[kind] = len(rows)
    store.settings_row(session, tenant_id)
    session.execute(update(m.billing_settings).where(m.billing_settings.c.tenant_id == tenant_id)
                    .values(psa=psa, references_refreshed_at=refreshed_at, refresh_requested_at=None,
                            refresh_attempted_at=refreshed_at, refresh_error=None))
    _MATCHERS.pop((tenant_id, "company"), None)
    _MATCHERS.pop((tenant_id, "service"), None)
    return counts


# --- reading the cache ---------------------------------------------------------------------------
def to_reference(row):
    if row.kind == "company":
        return PsaCompany(row.psa_id, row.name, row.active, tuple(row.domains or ()))
    if row.kind == "service":
        return PsaService(row.psa_id, row.name, row.active, row.unit_price, row.unit_cost, row.identifier)
    return PsaContract(row.psa_id, row.name, row.company_id or "", row.active, row.recurring, row.start_date,
                       row.period_months or 1)


def load(session, tenant_id, kind, ids=None, company_id=None):
    """{psa_id: domain reference} of one kind (optionally only these ids / one company's)."""
    t = m.psa_references
    query = select(t).where(t.c.tenant_id == tenant_id, t.c.kind == kind)
    if ids is not None:
        ids = sorted({str(i) for i in ids if i})
        if not ids:
            return {}
        query = query.where(t.c.psa_id.in_(ids))
    if company_id is not None:
        query = query.where(t.c.company_id == str(company_id))
    return {r.psa_id: to_reference(r) for r in session.execute(query)}


def load_many(session, tenant_id, wanted):
    """{kind: {psa_id: domain reference}} for ``wanted`` = {kind: ids}, in one query."""
    t = m.psa_references
    out = {kind: {} for kind in wanted}
    clauses = []
    for kind, ids in wanted.items():
        ids = sorted({str(i) for i in ids if i})
        if ids:
            clauses.append(and_(t.c.kind == kind, t.c.psa_id.in_(ids)))
    if not clauses:
        return out
    for r in session.execute(select(t).where(t.c.tenant_id == tenant_id, or_(*clauses))):
        out[r.kind][r.psa_id] = to_reference(r)
    return out


def get(session, tenant_id, kind, psa_id):
    return load(session, tenant_id, kind, ids=[psa_id]).get(str(psa_id))


def cache_stamp(session, tenant_id):
    return session.execute(select(m.billing_settings.c.references_refreshed_at)
                           .where(m.billing_settings.c.tenant_id == tenant_id)).scalar()


def is_empty(session, tenant_id):
    return cache_stamp(session, tenant_id) is None


def listing(session, tenant_id, kind, search=None, limit=1000):
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
    t = m.psa_references
    query = select(t).where(t.c.tenant_id == tenant_id, t.c.kind == kind)
    if search:
        pattern = f"%{search.strip().lower()}%"
        query = query.where(or_(func.lower(t.c.name).like(pattern), t.c.psa_id == search.strip()))
    rows = session.execute(query.order_by(func.lower(t.c.name), t.c.psa_id).limit(limit)).all()
    out = []
    for r in rows:
        item = {"psa_id": r.psa_id, "name": r.name, "active": r.active}
        if kind == "company":
            item["domains"] = list(r.domains or [])
        elif kind == "contract":
            item.update(company_id=r.company_id, recurring=r.recurring, start_date=store.json_safe(r.start_date),
                        period_months=r.period_months, billing_cycle=r.billing_cycle)
        else:
            item.update(unit_price=store.json_safe(r.unit_price), unit_cost=store.json_safe(r.unit_cost),
                        identifier=r.identifier)
        out.append(item)
    return out


def names(session, tenant_id, kind, psa_ids, limit=500):
    """{psa_id: name} of the cached PSA records among ``psa_ids`` (at most ``limit`` of them): the
    postings page names the contracts and services of a page of operations."""
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
    if not isinstance(psa_ids, (list, tuple)):
        raise BadRequest("psa_ids must be a list")
    ids = sorted({str(i) for i in psa_ids if i not in (None, "")})[:limit]
    if not ids:
        return {}
    t = m.psa_references
    rows = session.execute(select(t.c.psa_id, t.c.name).where(t.c.tenant_id == tenant_id, t.c.kind == kind,
                                                              t.c.psa_id.in_(ids))).all()
    return {r.psa_id: r.name for r in rows}


def require(session, tenant_id, kind, psa_id, *, company_id=None):
    """The referenced PSA record, or BadRequest saying why it can not be used."""
    ref = get(session, tenant_id, kind, psa_id)
    label = {"company": "PSA company", "contract": "PSA contract", "service": "PSA service"}[kind]
    if ref is None:
        raise BadRequest(f"{label} {psa_id} does not exist in the PSA (refresh the PSA records if it is new)")
    if not ref.active:
        raise BadRequest(f"{label} {psa_id} ({ref.name}) is inactive")
    if kind == "contract":
        if not ref.recurring:
            raise BadRequest(f"PSA contract {psa_id} ({ref.name}) is not a recurring contract")
        if company_id and ref.company_id != company_id:
            raise BadRequest(f"PSA contract {psa_id} ({ref.name}) belongs to company {ref.company_id}, "
                             f"but the customer is mapped to company {company_id}")
    return ref


# --- matchers (cached per tenant and refresh) ----------------------------------------------------
_MATCHERS = OrderedDict()
_MAX_TENANTS = 64


def matcher(session, tenant_id, kind):
    """The tenant's CompanyMatcher / ServiceMatcher for its current cache; None when it is empty."""
    stamp = cache_stamp(session, tenant_id)
    if stamp is None:
        return None
    cached = _MATCHERS.get((tenant_id, kind))
    if cached and cached[0] == stamp:
        _MATCHERS.move_to_end((tenant_id, kind))
        return cached[1]
    refs = list(load(session, tenant_id, kind).values())
    built = CompanyMatcher(refs) if kind == "company" else ServiceMatcher(refs)
    _MATCHERS[(tenant_id, kind)] = (stamp, built)
    while len(_MATCHERS) > _MAX_TENANTS * 2:
        _MATCHERS.popitem(last=False)
    return built


# --- suggestions ---------------------------------------------------------------------------------
def _open_for_suggestion(table):
    """Items an automatic suggestion may change: suggested ones, and unmapped ones no person
    decided (a person's "unmapped" stands until a person changes it)."""
    return or_(table.c.status == SUGGESTED, and_(table.c.status == UNMAPPED, table.c.decided_by.is_(None)))


def _suggestion_values(kind, before, suggestion):
    """The columns a suggestion sets, or None when the item already says exactly that."""
    values = {"status": suggestion.status, store.PSA_COLUMN[kind]: suggestion.psa_id,
              "score": None if suggestion.score is None else to_decimal(suggestion.score),
              "method": suggestion.method, "reason": suggestion.reason or None}
    same = all((before.get(k) == v) if k != "score" else
               ((before.get(k) is None and v is None) or (before.get(k) is not None and v is not None
                                                           and float(before[k]) == float(v)))
               for k, v in values.items())
    return None if same else values


def _write_suggestions(session, outbox, kind, tenant_id, found):
    """found: [(key, row before, Suggestion)] -> the keys whose suggestion moved."""
    changes = []
    for key, before, suggestion in found:
        values = _suggestion_values(kind, before, suggestion)
        if values is not None:
            changes.append((key, before, values))
    store.set_mappings(session, outbox, kind, tenant_id, changes, actor=store.SYSTEM, action="suggest",
                       audited=False)
    return [key for key, _, _ in changes]


def _mapping_columns(table, data):
    return {c.name: data[c.name] for c in table.c if c.name in data}


def suggest_customers(session, outbox, tenant_id, customer_ids=None):
    """(Re)suggest PSA companies for open customers; returns the ids whose suggestion moved."""
    found = matcher(session, tenant_id, "company")
    if found is None:
        return []
    c, cm = m.customers, m.customer_mappings
    query = (select(cm, c.c.name, c.c.domain).join(c, and_(c.c.tenant_id == cm.c.tenant_id,
                                                               c.c.customer_id == cm.c.customer_id))
             .where(cm.c.tenant_id == tenant_id, _open_for_suggestion(cm)))
    if customer_ids is not None:
        query = query.where(cm.c.customer_id.in_(list(customer_ids)))
    items = []
    for row in session.execute(query).all():
        data = dict(row._mapping)
        suggestion = found.suggest(data["name"], [data["domain"]] if data["domain"] else [])
        items.append((data["customer_id"], _mapping_columns(cm, data), suggestion))
    return _write_suggestions(session, outbox, "customer", tenant_id, items)


def suggest_products(session, outbox, tenant_id, mpns=None):
    found = matcher(session, tenant_id, "service")
    if found is None:
        return []
    p, pm = m.products, m.product_mappings
    query = (select(pm, p.c.name).join(p, and_(p.c.tenant_id == pm.c.tenant_id, p.c.mpn == pm.c.mpn))
             .where(pm.c.tenant_id == tenant_id, _open_for_suggestion(pm)))
    if mpns is not None:
        query = query.where(pm.c.mpn.in_(list(mpns)))
    items = []
    for row in session.execute(query).all():
        data = dict(row._mapping)
        items.append((data["mpn"], _mapping_columns(pm, data), found.suggest(data["mpn"], data["name"])))
    return _write_suggestions(session, outbox, "product", tenant_id, items)


LINE_KEY_CHUNK = 500


def suggest_links(session, outbox, tenant_id, customer_ids=None, line_keys=None):
    """Suggest a contract for open line links: the only active recurring contract of the company
    the customer is mapped (or suggested) to. Returns the line keys whose suggestion moved."""
    if cache_stamp(session, tenant_id) is None:
        return []
    if line_keys is not None and len(line_keys) > LINE_KEY_CHUNK:
        # a row-value IN of thousands of pairs exceeds PostgreSQL's stack depth (a bulk accept of a
        # 10,000-line tenant did): suggest chunk by chunk
        keys, moved = list(line_keys), []
        for i in range(0, len(keys), LINE_KEY_CHUNK):
            moved += suggest_links(session, outbox, tenant_id, customer_ids, keys[i:i + LINE_KEY_CHUNK])
        return moved
    k, ln, cm = m.line_links, m.lines, m.customer_mappings
    query = (select(k, ln.c.customer_id, cm.c.psa_company_id.label("company_id"), cm.c.status.label("customer_status"))
             .join(ln, and_(ln.c.tenant_id == k.c.tenant_id, ln.c.subscription_id == k.c.subscription_id,
                            ln.c.mpn == k.c.mpn))
             .outerjoin(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id))
             .where(k.c.tenant_id == tenant_id, _open_for_suggestion(k)))
    if customer_ids is not None:
        query = query.where(ln.c.customer_id.in_(list(customer_ids)))
    if line_keys is not None:
        keys = [tuple(x) for x in line_keys]
        if not keys:
            return []
        query = query.where(tuple_(k.c.subscription_id, k.c.mpn).in_(keys))
    rows = [dict(r._mapping) for r in session.execute(query).all()]
    companies = {r["company_id"] for r in rows if r["company_id"] and r["customer_status"] in (MAPPED, SUGGESTED)}
    contracts = {}
    if companies:
        t = m.psa_references
        for part in [sorted(companies)[i:i + 1000] for i in range(0, len(companies), 1000)]:
            for r in session.execute(select(t).where(t.c.tenant_id == tenant_id, t.c.kind == "contract",
                                                     t.c.company_id.in_(part))):
                contracts.setdefault(r.company_id, []).append(to_reference(r))
    items = []
    for data in rows:
        company = data["company_id"] if data["customer_status"] in (MAPPED, SUGGESTED) else None
        suggestion = suggest_contract(company, contracts.get(company, []))
        items.append(((data["subscription_id"], data["mpn"]), _mapping_columns(k, data), suggestion))
    return _write_suggestions(session, outbox, "line", tenant_id, items)


# --- reference checks ----------------------------------------------------------------------------
def recheck(session, outbox, tenant_id, kinds=("customer", "product", "line"), customer_ids=None):
    """Check every mapped / suggested / conflict item against the cache (domain check_mapping):
    a record that disappeared or went inactive makes a mapped item a conflict and drops a
    suggestion; a reference conflict whose record is fine again is mapped again.
    Returns the (kind, key) of every item whose status moved."""
    moved = []
    checked = (MAPPED, SUGGESTED, CONFLICT)
    if "customer" in kinds:
        cm = m.customer_mappings
        query = select(cm).where(cm.c.tenant_id == tenant_id, cm.c.status.in_(checked))
        if customer_ids is not None:
            query = query.where(cm.c.customer_id.in_(list(customer_ids)))
        rows = [dict(r._mapping) for r in session.execute(query)]
        refs = load(session, tenant_id, "company", ids=[r["psa_company_id"] for r in rows])
        for r in rows:
            if _recheck_one(session, outbox, "customer", tenant_id, r["customer_id"], r, "company",
                            r["psa_company_id"], refs.get(r["psa_company_id"] or "")):
                moved.append(("customer", r["customer_id"]))
    if "product" in kinds:
        pm = m.product_mappings
        rows = [dict(r._mapping) for r in session.execute(
            select(pm).where(pm.c.tenant_id == tenant_id, pm.c.status.in_(checked)))]
        refs = load(session, tenant_id, "service", ids=[r["psa_service_id"] for r in rows])
        for r in rows:
            if _recheck_one(session, outbox, "product", tenant_id, r["mpn"], r, "service", r["psa_service_id"],
                            refs.get(r["psa_service_id"] or "")):
                moved.append(("product", r["mpn"]))
    if "line" in kinds:
        k, ln, cm = m.line_links, m.lines, m.customer_mappings
        query = (select(k, cm.c.psa_company_id.label("company_id"), cm.c.status.label("customer_status"))
                 .join(ln, and_(ln.c.tenant_id == k.c.tenant_id, ln.c.subscription_id == k.c.subscription_id,
                                ln.c.mpn == k.c.mpn))
                 .outerjoin(cm, and_(cm.c.tenant_id == ln.c.tenant_id, cm.c.customer_id == ln.c.customer_id))
                 .where(k.c.tenant_id == tenant_id, k.c.status.in_(checked)))
        if customer_ids is not None:
            query = query.where(ln.c.customer_id.in_(list(customer_ids)))
        rows = [dict(r._mapping) for r in session.execute(query)]
        refs = load(session, tenant_id, "contract", ids=[r["psa_contract_id"] for r in rows])
        for r in rows:
            company = r["company_id"] if r["customer_status"] == MAPPED else None
            key = (r["subscription_id"], r["mpn"])
            data = {c: r[c] for c in r if c not in ("company_id", "customer_status")}
            if _recheck_one(session, outbox, "line", tenant_id, key, data, "contract", r["psa_contract_id"],
                            refs.get(r["psa_contract_id"] or ""), company_id=company):
                moved.append(("line", key))
    return moved


def _recheck_one(session, outbox, kind, tenant_id, key, row, ref_kind, psa_id, reference, company_id=None):
    status = row["status"]
    if status == CONFLICT and row.get("reason") and not row["reason"].startswith("PSA "):
        return False   # a conflict for another reason: only a person resolves it
    new_status, problem = check_mapping(status, ref_kind, psa_id, reference, company_id=company_id)
    if new_status == status:
        if status == CONFLICT and problem and problem != row.get("reason"):
            store.set_mapping(session, outbox, kind, tenant_id, key, {"reason": problem},
                              actor="system: PSA reference check", action="reference_check", before=row)
        return False
    values = {"status": new_status, "reason": problem}
    if new_status == UNMAPPED:   # a suggestion whose record went away is dropped
        values.update({store.PSA_COLUMN[kind]: None, "score": None, "method": None})
    store.set_mapping(session, outbox, kind, tenant_id, key, values, actor="system: PSA reference check",
                      action="reference_check", before=row)
    return True


# --- the refresh timer's to-do list --------------------------------------------------------------
def due_tenants(session, refresh_minutes, retry_minutes, limit=5):
    """Tenants whose PSA records should be read now: those that asked (empty cache) and those
    with mappings whose cache is older than refresh_minutes; none retried within retry_minutes."""
    bs, cm = m.billing_settings, m.customer_mappings
    now = store.now()
    retry_ok = or_(bs.c.refresh_attempted_at.is_(None),
                   bs.c.refresh_attempted_at < now - dt.timedelta(minutes=retry_minutes))
    has_mappings = select(cm.c.tenant_id).where(cm.c.tenant_id == bs.c.tenant_id,
                                                cm.c.status.in_((MAPPED, CONFLICT))).exists()
    stale = and_(bs.c.references_refreshed_at < now - dt.timedelta(minutes=refresh_minutes), has_mappings)
    rows = session.execute(select(bs.c.tenant_id).where(retry_ok, or_(bs.c.refresh_requested_at.is_not(None), stale))
                           .order_by(bs.c.refresh_requested_at.nulls_last(), bs.c.references_refreshed_at)
                           .limit(limit)).all()
    tenants = [r.tenant_id for r in rows]
    if tenants:   # claimed: another replica's timer (or the next tick) leaves them for retry_minutes
        session.execute(update(bs).where(bs.c.tenant_id.in_(tenants)).values(refresh_attempted_at=now))
    return tenants


def record_failure(session, tenant_id, error, forget=False):
    """A failed refresh: the reason is kept for the settings screen; ``forget`` drops the request
    (the tenant is unknown to the gateway - its next event asks again)."""
    values = {"refresh_error": error[:2000], "refresh_attempted_at": store.now()}
    if forget:
        values["refresh_requested_at"] = None
    session.execute(update(m.billing_settings).where(m.billing_settings.c.tenant_id == tenant_id).values(**values))


