"""What the marketplace events do to the mapping service's state (inside the handler's transaction,
after the event was claimed)."""
import logging

from services.mapping import recompute, references, store

log = logging.getLogger(__name__)


def _suggest_or_request(session, tenant_id):
    """True when suggestions can run now; else the timer is asked to read the PSA's records
    (a refresh re-suggests every open item)."""
    if references.is_empty(session, tenant_id):
        store.request_refresh(session, tenant_id)
        return False
    return True


def customer_changed(session, outbox, event):
    tenant_id, customer_id = event["tenant_id"], event["customer_id"]
    is_new, moved = store.upsert_customer(session, tenant_id, event)
    created = store.ensure_mapping_row(session, "customer", tenant_id, customer_id)
    if (is_new or moved or created) and _suggest_or_request(session, tenant_id):
        if references.suggest_customers(session, outbox, tenant_id, [customer_id]):
            references.suggest_links(session, outbox, tenant_id, customer_ids=[customer_id])
    return "applied"


def product_changed(session, outbox, event):
    tenant_id, mpn = event["tenant_id"], event["mpn"]
    is_new, moved = store.upsert_product(session, tenant_id, event)
    created = store.ensure_mapping_row(session, "product", tenant_id, mpn)
    if (is_new or moved or created) and _suggest_or_request(session, tenant_id):
        references.suggest_products(session, outbox, tenant_id, [mpn])
    return "applied"


def _keep_line(session, outbox, event):
    """Keep one line state (and the mapping rows and suggestions a new line needs); returns the
    line's key, or None when the event is older than the state we have."""
    tenant_id = event["tenant_id"]
    key = (event["subscription_id"], event["mpn"])
    # a known line (the usual case) costs one look-up here instead of five inserts
    present = store.line_presence(session, tenant_id, event["customer_id"], event["mpn"], key[0])
    store.ensure_placeholders(session, tenant_id, event["customer_id"], event["mpn"], present)
    new_customer = (not present["customer_mapping"]
                    and store.ensure_mapping_row(session, "customer", tenant_id, event["customer_id"]))
    new_product = not present["product_mapping"] and store.ensure_mapping_row(session, "product", tenant_id,
                                                                                event["mpn"])
    new_link = not present["line_link"] and store.ensure_mapping_row(session, "line", tenant_id, key)
    outcome = store.record_line(session, tenant_id, event)
    if (new_customer or new_product or new_link) and _suggest_or_request(session, tenant_id):
        if new_customer:
            references.suggest_customers(session, outbox, tenant_id, [event["customer_id"]])
        if new_product:
            references.suggest_products(session, outbox, tenant_id, [event["mpn"]])
        if new_link:
            references.suggest_links(session, outbox, tenant_id, line_keys=[key])
    if outcome == "stale":
        log.info("line %s/%s version %s is older than the one we have: kept in its history only",
                 key[0], key[1], event["line_version"])
        return None
    return key


def lines_changed(session, outbox, events):
    """Keep each line's state; suggest for what is new; recompute once the contract lines the
    events touch (a sync page's changes of one tenant: one plan per contract line, not per line).
    The events are of one tenant, whose lock the caller holds."""
    tenant_id = events[0]["tenant_id"]
    keys = [key for key in (_keep_line(session, outbox, event) for event in events) if key is not None]
    if not keys:
        return "stale"
    store.lock_tenant(session, tenant_id)
    groups = recompute.affected_groups(session, tenant_id, line_keys=keys, state_only=True)
    if groups:
        totals = recompute.recompute(session, outbox, tenant_id, groups)
        return f"applied ({totals['emitted']} sent, {totals['approvals']} for approval)"
    return "applied (waiting for its mappings)"
