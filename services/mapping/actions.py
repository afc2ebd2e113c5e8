"""What a person does on the mapping screens, and what follows automatically.

Every action: checks its input (BadRequest / NotFound), writes the decision with its audit row and
mapping_changed event, re-suggests and re-checks what depends on it (a customer's company decides
its lines' contract suggestions), then recomputes the affected contract lines under the tenant
lock - lines that waited for this mapping flow at once, with the dates they would have had.
"""
from sqlalchemy import and_, select, tuple_, update

from common.errors import BadRequest, NotFound
from services.mapping import models as m
from services.mapping import queries, recompute, references, store
from services.mapping.domain import (COST_PLUS, FIXED, IGNORED, MAPPED, PRICE_RULES, PSA_CATALOG, SUGGESTED,
                                     UNMAPPED, MappingDomainError, PriceRule)

KINDS = ("customer", "product", "line")


def _now():
    return store.now()


def settle(session, outbox, tenant_id, *, customer_ids=None, mpns=None, line_keys=None):
    """After mappings moved: re-suggest open contract links of the touched customers' lines,
    re-check mapped links (a contract must belong to the customer's company), and recompute
    every contract line the touched lines belong to (now or before)."""
    if customer_ids:
        references.suggest_links(session, outbox, tenant_id, customer_ids=customer_ids)
        references.recheck(session, outbox, tenant_id, kinds=("line",), customer_ids=customer_ids)
    if line_keys:
        references.suggest_links(session, outbox, tenant_id, line_keys=line_keys)
    store.lock_tenant(session, tenant_id)
    groups = recompute.affected_groups(session, tenant_id, customer_ids=customer_ids, mpns=mpns, line_keys=line_keys)
    return recompute.recompute(session, outbox, tenant_id, groups)


# --- price rules ---------------------------------------------------------------------------------
def price_rule(rule, markup_pct=None, fixed_price=None, *, service=None, what="product"):
    """A validated domain PriceRule; BadRequest saying what is missing."""
    if rule not in PRICE_RULES:
        raise BadRequest(f"price_rule must be one of {', '.join(PRICE_RULES)}")
    try:
        result = PriceRule(rule, markup_pct, fixed_price)
    except MappingDomainError as exc:
        raise BadRequest(str(exc)) from None
    if rule == COST_PLUS and result.markup_pct is None:
        raise BadRequest("price rule cost_plus needs markup_pct (a percentage, e.g. 15 for +15%)")
    if rule == COST_PLUS and result.markup_pct < -100:
        raise BadRequest("markup_pct must be -100 or more")
    if rule == FIXED and result.fixed_price is None:
        raise BadRequest("price rule fixed needs fixed_price")
    if rule == FIXED and result.fixed_price < 0:
        raise BadRequest("fixed_price must not be negative")
    if rule == PSA_CATALOG and service is not None and service.unit_price is None:
        raise BadRequest(f"PSA service {service.psa_id} ({service.name}) has no catalog price: "
                         f"choose another price rule for this {what}")
    return result


# --- customers, products, lines ------------------------------------------------------------------
def map_customer(session, outbox, tenant_id, customer_id, psa_company_id, actor):
    before = store.mapping_row(session, "customer", tenant_id, customer_id, lock=True)
    if not psa_company_id:
        raise BadRequest("psa_company_id is required")
    ref = references.require(session, tenant_id, "company", str(psa_company_id))
    store.set_mapping(session, outbox, "customer", tenant_id, customer_id,
                      _decision(before, "psa_company_id", ref.psa_id, actor), actor=actor, action="map", before=before)
    settle(session, outbox, tenant_id, customer_ids=[customer_id])
    return queries.customer(session, tenant_id, customer_id)


def _decision(before, psa_column, psa_id, actor):
    """A person's mapping: keeps the suggestion's score and method when it accepts it."""
    accepted = before["status"] == SUGGESTED and before.get(psa_column) == psa_id
    return {"status": MAPPED, psa_column: psa_id, "score": before["score"] if accepted else None,
            "method": before["method"] if accepted else "manual", "reason": None, "decided_by": actor,
            "decided_at": _now()}


def map_product(session, outbox, tenant_id, mpn, psa_service_id, rule, markup_pct=None, fixed_price=None, actor=None):
    before = store.mapping_row(session, "product", tenant_id, mpn, lock=True)
    if not psa_service_id:
        raise BadRequest("psa_service_id is required")
    service = references.require(session, tenant_id, "service", str(psa_service_id))
    checked = price_rule(rule, markup_pct, fixed_price, service=service)
    values = _decision(before, "psa_service_id", service.psa_id, actor)
    values.update(price_rule=checked.rule, markup_pct=checked.markup_pct, fixed_price=checked.fixed_price)
    store.set_mapping(session, outbox, "product", tenant_id, mpn, values, actor=actor, action="map", before=before)
    settle(session, outbox, tenant_id, mpns=[mpn])
    return queries.product(session, tenant_id, mpn)


def link_line(session, outbox, tenant_id, subscription_id, mpn, psa_contract_id, actor):
    key = (str(subscription_id), str(mpn))
    before = store.mapping_row(session, "line", tenant_id, key, lock=True)
    if not psa_contract_id:
        raise BadRequest("psa_contract_id is required")
    company = _customer_company(session, tenant_id, key)
    contract = references.require(session, tenant_id, "contract", str(psa_contract_id), company_id=company)
    store.set_mapping(session, outbox, "line", tenant_id, key,
                      _decision(before, "psa_contract_id", contract.psa_id, actor), actor=actor, action="link",
                      before=before)
    settle(session, outbox, tenant_id, line_keys=[key])
    return queries.line(session, tenant_id, *key)


def _customer_company(session, tenant_id, key):
    ln, cm = m.lines, m.customer_mappings
    row = session.execute(select(cm.c.psa_company_id, cm.c.status)
                          .join(ln, and_(ln.c.tenant_id == cm.c.tenant_id, ln.c.customer_id == cm.c.customer_id))
                          .where(ln.c.tenant_id == tenant_id, ln.c.subscription_id == key[0],
                                 ln.c.mpn == key[1])).first()
    return row.psa_company_id if row is not None and row.status == MAPPED else None


def set_status(session, outbox, tenant_id, kind, key, status, actor):
    """Ignore an item (never billed) or unmap it (a person's "no"; automatic suggestions leave it alone)."""
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
    if status not in (IGNORED, UNMAPPED):
        raise BadRequest("status must be ignored or unmapped")
    if kind == "line":
        key = store.split_line_key(key)
    before = store.mapping_row(session, kind, tenant_id, key, lock=True)
    values = {"status": status, store.PSA_COLUMN[kind]: None, "score": None, "method": "manual",
              "reason": f"{status} by {actor or 'a person'}", "decided_by": actor or store.SYSTEM,
              "decided_at": _now()}
    store.set_mapping(session, outbox, kind, tenant_id, key, values, actor=actor,
                      action="ignore" if status == IGNORED else "unmap", before=before)
    if kind == "customer":
        settle(session, outbox, tenant_id, customer_ids=[key])
        return queries.customer(session, tenant_id, key)
    if kind == "product":
        settle(session, outbox, tenant_id, mpns=[key])
        return queries.product(session, tenant_id, key)
    settle(session, outbox, tenant_id, line_keys=[key])
    return queries.line(session, tenant_id, *key)


def bulk(session, outbox, tenant_id, kind, action, search=None, status=None, actor=None):
    """accept: every suggested item of the filtered selection becomes mapped to its suggestion;
    ignore: every item of the selection not ignored yet becomes ignored. -> {"changed": n}"""
    if kind not in KINDS:
        raise BadRequest(f"kind must be one of {', '.join(KINDS)}")
    if action not in ("accept", "ignore"):
        raise BadRequest("action must be accept or ignore")
    store.bulk_mode(session)
    selection = {"customer": queries.customer_selection, "product": queries.product_selection,
                 "line": queries.line_selection}[kind](tenant_id, search, status).subquery()
    table = store.MAPPING_TABLES[kind]
    psa_column = store.PSA_COLUMN[kind]
    key_cols = list(store.key_columns(kind, ("s", "m") if kind == "line" else "k"))
    chosen = tuple_(*[table.c[c] for c in key_cols]).in_(select(*[selection.c[c] for c in key_cols]))
    query = select(table).where(table.c.tenant_id == tenant_id, chosen)
    query = query.where(table.c.status == SUGGESTED, table.c[psa_column].is_not(None)) if action == "accept" \
        else query.where(table.c.status != IGNORED)
    rows = [dict(r._mapping) for r in session.execute(query.with_for_update())]
    services = references.load(session, tenant_id, "service") if kind == "product" and action == "accept" else {}
    changes, now = [], _now()
    for before in rows:
        key = tuple(before[c] for c in key_cols) if kind == "line" else before[key_cols[0]]
        if action == "accept":
            values = _decision(before, psa_column, before[psa_column], actor)
            if kind == "product":
                values.update(_default_rule(before, services.get(before[psa_column])))
                values.setdefault("price_rule", before.get("price_rule"))
        else:
            values = {"status": IGNORED, psa_column: None, "score": None, "method": "manual",
                      "reason": f"ignored by {actor or 'a person'}", "decided_by": actor or store.SYSTEM,
                      "decided_at": now}
        changes.append((key, before, values))
    store.set_mappings(session, outbox, kind, tenant_id, changes, actor=actor, action=f"bulk_{action}")
    changed = [key for key, _, _ in changes]
    if changed:
        if kind == "customer":
            settle(session, outbox, tenant_id, customer_ids=changed)
        elif kind == "product":
            settle(session, outbox, tenant_id, mpns=changed)
        else:
            settle(session, outbox, tenant_id, line_keys=changed)
    return {"changed": len(changed)}


def _default_rule(before, service):
    """An accepted product keeps its price rule; without one it bills the PSA catalog price when
    the PSA service has one, else the marketplace price (msrp)."""
    if before.get("price_rule"):
        return {}
    return {"price_rule": PSA_CATALOG if service is not None and service.unit_price is not None else "msrp"}


# --- price overrides -----------------------------------------------------------------------------
def set_price_override(session, outbox, tenant_id, customer_id, mpn, rule, markup_pct=None, fixed_price=None,
                       actor=None):
    store.mapping_row(session, "customer", tenant_id, customer_id)
    product = store.mapping_row(session, "product", tenant_id, mpn)
    service = references.get(session, tenant_id, "service", product["psa_service_id"]) \
        if product.get("psa_service_id") else None
    checked = price_rule(rule, markup_pct, fixed_price, service=service, what="customer")
    po = m.price_overrides
    old = session.execute(select(po).where(po.c.tenant_id == tenant_id, po.c.customer_id == customer_id,
                                           po.c.mpn == mpn).with_for_update()).first()
    values = {"price_rule": checked.rule, "markup_pct": checked.markup_pct, "fixed_price": checked.fixed_price,
              "decided_by": actor}
    if old is None:
        session.execute(po.insert().values(tenant_id=tenant_id, customer_id=customer_id, mpn=mpn, **values))
    else:
        session.execute(update(po).where(po.c.tenant_id == tenant_id, po.c.customer_id == customer_id,
                                         po.c.mpn == mpn).values(**values, updated_at=_now()))
    store.audit(session, tenant_id, actor, "override", f"{customer_id}/{mpn}", "set",
                None if old is None else _override_snapshot(old._mapping), _override_snapshot(values))
    _settle_override(session, outbox, tenant_id, customer_id, mpn)
    return queries.price_override(session, tenant_id, customer_id, mpn)


def remove_price_override(session, outbox, tenant_id, customer_id, mpn, actor=None):
    po = m.price_overrides
    old = session.execute(select(po).where(po.c.tenant_id == tenant_id, po.c.customer_id == customer_id,
                                           po.c.mpn == mpn).with_for_update()).first()
    if old is None:
        raise NotFound(f"no price override for customer {customer_id!r} and product {mpn!r}")
    session.execute(po.delete().where(po.c.tenant_id == tenant_id, po.c.customer_id == customer_id, po.c.mpn == mpn))
    store.audit(session, tenant_id, actor, "override", f"{customer_id}/{mpn}", "remove",
                _override_snapshot(old._mapping), None)
    _settle_override(session, outbox, tenant_id, customer_id, mpn)
    return {"removed": True, "customer_id": customer_id, "mpn": mpn}


def _override_snapshot(values):
    return store.json_safe({k: values[k] for k in ("price_rule", "markup_pct", "fixed_price")})


def _settle_override(session, outbox, tenant_id, customer_id, mpn):
    ln = m.lines
    keys = [tuple(r) for r in session.execute(select(ln.c.subscription_id, ln.c.mpn).where(
        ln.c.tenant_id == tenant_id, ln.c.customer_id == customer_id, ln.c.mpn == mpn))]
    if keys:
        settle(session, outbox, tenant_id, line_keys=keys)


# --- settings ------------------------------------------------------------------------------------
def update_settings(session, outbox, tenant_id, values, actor=None):
    """Change billing settings (already validated by schemas.SettingsUpdate). Holding lines count
    again (or stop counting) at once when bill_suspended moves: every contract line is recomputed."""
    store.lock_tenant(session, tenant_id)
    before = store.settings_row(session, tenant_id)
    merged = {**before, **values}
    try:
        store.billing_settings(merged)
    except MappingDomainError as exc:
        raise BadRequest(str(exc)) from None
    session.execute(update(m.billing_settings).where(m.billing_settings.c.tenant_id == tenant_id)
                    .values(**values, updated_by=actor, updated_at=_now()))
    store.audit(session, tenant_id, actor, "settings", "billing", "update",
                store.json_safe({k: before[k] for k in values}), store.json_safe(values))
    if before["bill_suspended"] != merged["bill_suspended"]:
        recompute.recompute(session, outbox, tenant_id, None)
    return store.settings_out(store.settings_row(session, tenant_id))
