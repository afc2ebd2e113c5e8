"""Mapping service: entrypoints only. Rules in domain/, planning in planner.py + recompute.py, the
mapping screens' writes in actions.py, lists in queries.py, the PSA cache in references.py.

Events in (marketplace): subscription_line_changed, customer_changed, product_changed - each keeps
the service's copy, suggests mappings for what is new and recomputes the contract lines it touches.
Events out: autotask_line_desired / connectwise_line_desired (LineDesired: "from effective_date
on, this contract line says quantity X at price P", desired_version increasing per contract
line), mapping_changed.

RPC (first argument always the caller's tenant_id; every query filters by it, so another tenant's
id is NotFound): customers, products, lines, map_customer, map_product, link_line, set_status,
bulk, set_price_override, remove_price_override, price_overrides, approvals, decide, preview,
settings, update_settings, refresh_references, references, reference_names, linked_lines, not_billed,
desired_lines, audit, desired_versions and resend_desired (the PSA services' nightly check).

Timer: refresh_due_references (REFERENCE_POLL_SECONDS) reads the PSA's records for tenants that
asked for it (empty cache) and, every REFERENCE_REFRESH_MINUTES, for tenants with mappings.
"""
import logging

from nameko.exceptions import RemoteError, UnknownService
from nameko.rpc import RpcProxy, rpc

from common.consumers import by_tenant, reliable_handler
from common.db import Database
from common.errors import BadRequest, NotFound, VendorUnavailable
from common.events import load_event
from common.idempotency import claim_event, claim_events
from common.logs import log_context
from common.outbox import OutboxRelay
from common.service_base import ServiceBase
from services.mapping import (actions, approvals, handlers, models, queries, recompute, references, reports,
                              schemas, store)
from services.mapping.dependencies import config_timer
from services.mapping.exceptions import from_remote

log = logging.getLogger(__name__)

PSAS = ("autotask", "connectwise")


def _tenant(tenant_id):
    if not isinstance(tenant_id, str) or not tenant_id.strip():
        raise BadRequest("tenant_id is required")
    return tenant_id


class MappingService(ServiceBase):
    name = "mapping"
    db = Database()
    outbox = OutboxRelay(lambda: models.outbox)
    gateway = RpcProxy("gateway")
    autotask = RpcProxy("autotask")
    connectwise = RpcProxy("connectwise")

    # --- events --------------------------------------------------------------------------------
    def _handle(self, event_type, payload, apply):
        event = load_event("marketplace", event_type, payload)
        with log_context(event["tenant_id"], event["event_id"]), self.db.transaction() as session:
            if not claim_event(session, models.processed_events, f"mapping.on_{event_type}", event):
                return "duplicate"
            # one writer per tenant at a time: a line's copy, its links and the contract lines it
            # belongs to are never locked in two orders by two workers
            store.lock_tenant(session, event["tenant_id"])
            return apply(session, self.outbox, event)

    @reliable_handler("marketplace", "subscription_line_changed", batch=True)
    def on_subscription_line_changed(self, payloads):
        """A message's line events (an envelope from a sync) in one transaction: each claimed on its
        own, then each tenant's in turn under that tenant's lock (taken in tenant order)."""
        events = [load_event("marketplace", "subscription_line_changed", p) for p in payloads]
        consumer = "mapping.on_subscription_line_changed"
        outcomes = []
        with log_context(events[0]["tenant_id"], events[0]["event_id"]), self.db.transaction() as session:
            fresh = claim_events(session, models.processed_events, consumer, events)
            for tenant_id, tenant_events in by_tenant(fresh):
                with log_context(tenant_id, tenant_events[0]["event_id"]):
                    store.lock_tenant(session, tenant_id)
                    outcomes.append(handlers.lines_changed(session, self.outbox, tenant_events))
        return "; ".join(outcomes) or "duplicate"

    @reliable_handler("marketplace", "customer_changed")
    def on_customer_changed(self, payload):
        return self._handle("customer_changed", payload, handlers.customer_changed)

    @reliable_handler("marketplace", "product_changed")
    def on_product_changed(self, payload):
        return self._handle("product_changed", payload, handlers.product_changed)

    # --- PSA references ------------------------------------------------------------------------
    def _psa(self, tenant_id):
        """The tenant's PSA: from billing_settings, else the gateway's tenant profile (first use)."""
        with self.db.transaction() as session:
            psa = store.settings_or_defaults(session, tenant_id)["psa"]
        if psa:
            return psa
        try:
            profile = self.gateway.tenant_profile(tenant_id)
        except RemoteError as exc:
            raise (from_remote(exc, "tenant") or exc) from None
        except UnknownService:
            raise VendorUnavailable("the gateway is not running") from None
        psa = profile.get("psa")
        if psa not in PSAS:
            raise BadRequest(f"the tenant's PSA {psa!r} is not one of {', '.join(PSAS)}")
        with self.db.transaction() as session:
            store.set_psa(session, tenant_id, psa)
        return psa

    def _refresh(self, tenant_id):
        """Read the tenant's PSA companies, contracts and services, replace the cache, re-check every
        mapping against it, re-suggest open items and recompute the contract lines."""
        psa = self._psa(tenant_id)
        proxy = getattr(self, psa)
        fetched = {}
        for kind in references.KINDS:
            try:
                fetched[kind] = proxy.browse_references(tenant_id, kind)
            except RemoteError as exc:
                raise (from_remote(exc, f"reading the {psa} {kind} records") or exc) from None
            except UnknownService:
                raise VendorUnavailable(f"the {psa} service is not running") from None
        with self.db.transaction() as session:
            store.lock_tenant(session, tenant_id)
            store.bulk_mode(session)
            counts = references.replace_cache(session, tenant_id, psa, fetched)
            references.recheck(session, self.outbox, tenant_id)
            references.suggest_customers(session, self.outbox, tenant_id)
            references.suggest_products(session, self.outbox, tenant_id)
            references.suggest_links(session, self.outbox, tenant_id)
            recompute.recompute(session, self.outbox, tenant_id, None)
        log.info("PSA records refreshed: %s", counts)
        return counts

    def _ensure_references(self, tenant_id):
        with self.db.transaction() as session:
            empty = references.is_empty(session, tenant_id)
        if empty:
            self._refresh(tenant_id)

    @rpc
    def refresh_references(self, tenant_id):
        tenant_id = _tenant(tenant_id)
        with log_context(tenant_id=tenant_id):
            return self._refresh(tenant_id)

    @rpc
    def references(self, tenant_id, kind, search=None):
        tenant_id = _tenant(tenant_id)
        if kind not in references.KINDS:
            raise BadRequest(f"kind must be one of {', '.join(references.KINDS)}")
        with log_context(tenant_id=tenant_id):
            self._ensure_references(tenant_id)
            with self.db.transaction() as session:
                return references.listing(session, tenant_id, kind, search)

    @rpc
    def linked_lines(self, tenant_id, page=1, per_page=50, search=None, after=None, walk=False):
        """The Linked Subscriptions report: a page by customer (``walk`` false), or the next lines
        after the key ``after`` in key order (``walk`` true: the CSV export)."""
        tenant_id = _tenant(tenant_id)
        with self.db.transaction() as session:
            if walk:
                return reports.linked_lines_after(session, tenant_id, after, per_page)
            return reports.linked_lines(session, tenant_id, page, per_page, search)

    @rpc
    def not_billed(self, tenant_id, page=1, per_page=50):
        """Per customer: lines that would bill but are not mapped, and the revenue they hold back."""
        tenant_id = _tenant(tenant_id)
        with self.db.transaction() as session:
            return reports.not_billed(session, tenant_id, page, per_page)

    # --- the PSA services' nightly check that no desired state was lost on the way -------------
    @rpc
    def desired_versions(self, tenant_id):
        """[[contract_id, service_id, version]]: the last schedule version sent per contract line."""
        return self._read(recompute.desired_versions, tenant_id)

    @rpc
    def resend_desired(self, tenant_id, groups):
        """Send these contract lines' ([[contract_id, service_id]]) current schedules again."""
        if not isinstance(groups, list) or not all(isinstance(g, (list, tuple)) and len(g) == 2 for g in groups):
            raise BadRequest("groups must be a list of [contract_id, service_id]")
        return self._write(recompute.resend, tenant_id, [(str(c), str(s)) for c, s in groups])

    @rpc
    def reference_names(self, tenant_id, kind, psa_ids):
        tenant_id = _tenant(tenant_id)
        with self.db.transaction() as session:
            return references.names(session, tenant_id, kind, psa_ids)

    @config_timer("REFERENCE_POLL_SECONDS", 15)
    def refresh_due_references(self):
        minutes = float(self.config.get("REFERENCE_REFRESH_MINUTES", 60) or 60)
        retry = float(self.config.get("REFERENCE_RETRY_MINUTES", 5) or 5)
        with self.db.transaction() as session:
            due = references.due_tenants(session, minutes, retry)
        for tenant_id in due:
            with log_context(tenant_id=tenant_id):
                try:
                    self._refresh(tenant_id)
                except Exception as exc:  # noqa: BLE001 - recorded, retried after REFERENCE_RETRY_MINUTES
                    log.warning("PSA records not refreshed: %s: %s", type(exc).__name__, exc)
                    with self.db.transaction() as session:
                        references.record_failure(session, tenant_id, f"{type(exc).__name__}: {exc}",
                                                  forget=isinstance(exc, NotFound))

    # --- lists ---------------------------------------------------------------------------------
    def _read(self, fn, tenant_id, *args, **kwargs):
        tenant_id = _tenant(tenant_id)
        with log_context(tenant_id=tenant_id), self.db.transaction() as session:
            return fn(session, tenant_id, *args, **kwargs)

    @rpc
    def customers(self, tenant_id, page=1, per_page=50, search=None, status=None):
        return self._read(queries.customers, tenant_id, page, per_page, search, status)

    @rpc
    def products(self, tenant_id, page=1, per_page=50, search=None, status=None):
        return self._read(queries.products, tenant_id, page, per_page, search, status)

    @rpc
    def lines(self, tenant_id, page=1, per_page=50, search=None, status=None, customer_id=None):
        return self._read(queries.lines, tenant_id, page, per_page, search, status, customer_id)

    @rpc
    def price_overrides(self, tenant_id):
        return self._read(queries.price_overrides, tenant_id)

    @rpc
    def approvals(self, tenant_id, page=1, per_page=50, status="pending"):
        return self._read(queries.approvals, tenant_id, page, per_page, status)

    @rpc
    def desired_lines(self, tenant_id, page=1, per_page=50):
        return self._read(queries.desired_lines, tenant_id, page, per_page)

    @rpc
    def preview(self, tenant_id):
        return self._read(recompute.preview, tenant_id)

    @rpc
    def audit(self, tenant_id, kind=None, key=None, limit=100):
        return self._read(store.audit_trail, tenant_id, kind, key, min(int(limit or 100), 1000))

    # --- decisions -----------------------------------------------------------------------------
    def _write(self, fn, tenant_id, *args, needs_references=False, **kwargs):
        tenant_id = _tenant(tenant_id)
        with log_context(tenant_id=tenant_id):
            if needs_references:
                self._ensure_references(tenant_id)
            with self.db.transaction() as session:
                store.lock_tenant(session, tenant_id)
                return fn(session, self.outbox, tenant_id, *args, **kwargs)

    @rpc
    def map_customer(self, tenant_id, customer_id, psa_company_id, actor=None):
        self._exists(tenant_id, "customer", customer_id)
        return self._write(actions.map_customer, tenant_id, customer_id, psa_company_id, actor,
                           needs_references=True)

    @rpc
    def map_product(self, tenant_id, mpn, psa_service_id, price_rule, markup_pct=None, fixed_price=None,
                    actor=None):
        self._exists(tenant_id, "product", mpn)
        return self._write(actions.map_product, tenant_id, mpn, psa_service_id, price_rule, markup_pct,
                           fixed_price, actor, needs_references=True)

    @rpc
    def link_line(self, tenant_id, subscription_id, mpn, psa_contract_id, actor=None):
        self._exists(tenant_id, "line", (str(subscription_id), str(mpn)))
        return self._write(actions.link_line, tenant_id, subscription_id, mpn, psa_contract_id, actor,
                           needs_references=True)

    def _exists(self, tenant_id, kind, key):
        """NotFound before anything else (a lazy PSA refresh must not run for another tenant's id)."""
        self._read(lambda session, t: store.mapping_row(session, kind, t, key), tenant_id)

    @rpc
    def set_status(self, tenant_id, kind, key, status, actor=None):
        return self._write(actions.set_status, tenant_id, kind, key, status, actor)

    @rpc
    def bulk(self, tenant_id, kind, action, search=None, status=None, actor=None):
        return self._write(actions.bulk, tenant_id, kind, action, search, status, actor)

    @rpc
    def set_price_override(self, tenant_id, customer_id, mpn, price_rule, markup_pct=None, fixed_price=None,
                           actor=None):
        return self._write(actions.set_price_override, tenant_id, customer_id, mpn, price_rule, markup_pct,
                           fixed_price, actor)

    @rpc
    def remove_price_override(self, tenant_id, customer_id, mpn, actor=None):
        return self._write(actions.remove_price_override, tenant_id, customer_id, mpn, actor)

    @rpc
    def decide(self, tenant_id, approval_ids, decision, note=None, effective_date=None, actor=None):
        return self._write(approvals.decide, tenant_id, approval_ids, decision, note, effective_date, actor)

    # --- settings ------------------------------------------------------------------------------
    @rpc
    def settings(self, tenant_id):
        tenant_id = _tenant(tenant_id)
        with log_context(tenant_id=tenant_id):
            self._psa(tenant_id)
            with self.db.transaction() as session:
                return store.settings_out(store.settings_row(session, tenant_id))

    @rpc
    def update_settings(self, tenant_id, changes, actor=None):
        tenant_id = _tenant(tenant_id)
        values = schemas.load_settings_update(changes)
        with log_context(tenant_id=tenant_id):
            self._psa(tenant_id)
            with self.db.transaction() as session:
                return actions.update_settings(session, self.outbox, tenant_id, values, actor)
