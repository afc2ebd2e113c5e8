"""ConnectWise posting: the kit's loop (common.posting) with ConnectWise's reads, plan and writes.

- ``BudgetedConnectWiseClient``: the client (services/connectwise/client.py, unchanged) whose every
  request attempt first takes a cross-replica slot for its endpoint (at most
  CONNECTWISE_THREADS_PER_ENDPOINT in flight per tenant) and one request of the tenant's budget
  (CONNECTWISE_BUDGET_SHARE of CONNECTWISE_HOURLY_LIMIT requests per CONNECTWISE_BUDGET_WINDOW_SECONDS;
  default 40 % of 1,000 a minute - the vendor throttles around 1,000/minute per company), and is
  counted in psa_requests_total / psa_request_seconds. Codebase discovery is free. A 429 carries the
  vendor's Retry-After (or the seconds named in its message) into the ledger's backoff.
- ``ConnectWiseAdapter.read``: the additions of every agreement of the batch, agreement by agreement
  (the API has no cross-agreement additions path), 1,000 a page, leaving out those cancelled
  before the earliest window start of the batch.
- ``ConnectWiseAdapter.plan``: services/connectwise/planner.py.
- ``ConnectWiseAdapter.execute``: POST an addition / PATCH quantity / PATCH cancelledDate / PATCH
  unitPrice+unitCost.
- ``ConnectWisePosting``: the nameko dependency holding the budget, retry policy, settings and the
  client cache; ``poster(store, outbox, adapter)`` builds the loop for one timer tick.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import hashlib
import logging
import threading
import time

import eventlet
from nameko.extensions import DependencyProvider

from common.db import make_engine
from common.posting import Poster, RequestBudget, RetryPolicy, Unreadable
from common.posting.engine import PsaAdapter, default_owner
from common.posting.metrics import PSA_REQUESTS, PSA_SECONDS
from common.vault import Vault
from common.vendor_client import NotFound, VendorError
from services.connectwise import models, planner
from services.connectwise.client import ConnectWiseClient, _date_value, _int_id, _number, additions_path

log = logging.getLogger(__name__)

PSA = "connectwise"
FREE_ENDPOINTS = {"GET login/companyinfo"}


def endpoint_key(endpoint):
    """The slot key of a metrics label: every additions call shares one ("GET
    finance/agreements/{id}/additions/{id}" -> "finance/agreements/{id}/additions")."""
    path = endpoint.split(" ", 1)[-1].strip("/")
    parts = path.split("/")
    if "additions" in parts:
        return "/".join(parts[:parts.index("additions") + 1])
    return path


class BudgetedConnectWiseClient(ConnectWiseClient):
    """ConnectWiseClient whose every attempt (retries too) is budgeted, slotted and measured."""

    def __init__(self, credentials, *, budget=None, tenant_id=None, **kwargs):
        super().__init__(credentials, **kwargs)
        self.budget = budget
        self.tenant_id = tenant_id

    def _attempt(self, method, url, endpoint, attempt, **kw):
        if self.budget is None or endpoint in FREE_ENDPOINTS:
            return super()._attempt(method, url, endpoint, attempt, **kw)
        with self.budget.request(self.tenant_id, endpoint_key(endpoint)):
            started = time.monotonic()
            try:
                response = super()._attempt(method, url, endpoint, attempt, **kw)
            except VendorError as err:
                PSA_REQUESTS.labels(PSA, endpoint, str(err.status or type(err).__name__)).inc()
                raise
            finally:
                PSA_SECONDS.labels(PSA, endpoint).observe(time.monotonic() - started)
        PSA_REQUESTS.labels(PSA, endpoint, str(response.status_code)).inc()
        return response

    def create_bounded_addition(self, agreement_id, product_id, quantity, unit_price, unit_cost, effective_date,
                                cancelled_date):
        """POST an addition billed only until cancelled_date (create_addition has no cancelledDate)."""
        body = {"product": {"id": _int_id(product_id, "product_id")}, "quantity": _number(quantity, "quantity"),
                "billCustomer": "Billable", "effectiveDate": _date_value(effective_date, "effective_date"),
                "cancelledDate": _date_value(cancelled_date, "cancelled_date")}
        if unit_price is not None:
            body["unitPrice"] = _number(unit_price, "unit_price")
        if unit_cost is not None:
            body["unitCost"] = _number(unit_cost, "unit_cost")
        return self._write("POST", additions_path(agreement_id), body, agreement_id)


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _addition(a):
    return planner.CwAddition(a.id, int(a.quantity), a.unit_price, a.unit_cost, a.effective_date, a.cancelled_date)


class ConnectWiseAdapter(PsaAdapter):
    psa = PSA

    def __init__(self, client_factory, settings_lookup=None, today=None):
        self._client_factory = client_factory
        self._settings = settings_lookup
        self._today = today or (lambda: dt.datetime.now(dt.timezone.utc).date())

    def client(self, tenant_id):
        return self._client_factory(tenant_id)

    def edited_in_psa(self, tenant_id):
        return self._settings(tenant_id) if self._settings else "hold"

    def read(self, client, works):
        today = self._today()
        out, starts = {}, {}
        for w in works:
            if _int(w.contract_id) is None or _int(w.service_id) is None:
                out[w.key] = Unreadable(f"agreement {w.contract_id!r} / product {w.service_id!r} is not a ConnectWise id")
                continue
            aid = int(w.contract_id)
            start = planner.window_start(w, today)
            starts[aid] = min(starts.get(aid, start), start)
        by_agreement, missing, bad = {}, set(), set()
        for aid in sorted(starts):
            # additions still billing on or after the window start (cancelledDate > start - 1 day)
            listing = client.additions(aid, as_of=starts[aid] - dt.timedelta(days=1))
            try:
                by_agreement[aid] = listing.all()
            except NotFound:
                missing.add(aid)
            if listing.malformed:
                bad.add(aid)
        for w in works:
            if w.key in out:
                continue
            aid, pid = int(w.contract_id), int(w.service_id)
            if aid in missing:
                out[w.key] = Unreadable(f"agreement {aid} was not found in ConnectWise")
            elif aid in bad:
                out[w.key] = Unreadable("ConnectWise returned malformed additions for this agreement (quarantined)")
            else:
                out[w.key] = planner.ConnectWiseLine(tuple(
                    _addition(a) for a in by_agreement.get(aid, ()) if a.product_id == pid))
        return out

    def plan(self, work, state):
        return planner.plan_line(work, state, self._today())

    def execute(self, client, work, op):
        agreement, product = int(work.contract_id), int(work.service_id)
        p = op.params
        if op.kind == planner.ADD:
            if p.get("cancelled_date"):
                rec = client.create_bounded_addition(agreement, product, p["quantity"], op.unit_price, op.unit_cost,
                                                     op.effective_date, p["cancelled_date"])
            else:
                rec = client.create_addition(agreement, product, p["quantity"], op.unit_price, op.unit_cost,
                                             op.effective_date, "Billable")
            return rec.id
        addition = p.get("addition_id")
        if addition is None:
            raise ValueError(f"{op.kind} without an addition id")
        if op.kind == planner.QUANTITY:
            return client.update_addition(agreement, int(addition), quantity=int(p["quantity"])).id
        if op.kind == planner.CANCEL:
            return client.update_addition(agreement, int(addition), cancelled_date=p.get("cancelled_date")).id
        if op.kind == planner.PRICE:
            changes = {"unit_price": op.unit_price}
            if op.unit_cost is not None:
                changes["unit_cost"] = op.unit_cost
            return client.update_addition(agreement, int(addition), **changes).id
        raise ValueError(f"unknown ConnectWise operation {op.kind!r}")


def declare_event_exchange(config, service_name):
    """Declare "<service>.events" at start-up (the outbox relay publishes with `mandatory`; publishing
    to an exchange nobody declared yet fails the relay pass)."""
    from kombu import Connection
    from nameko.constants import AMQP_URI_CONFIG_KEY
    from nameko.events import get_event_exchange

    try:
        with Connection(config[AMQP_URI_CONFIG_KEY], connect_timeout=5) as conn:
            get_event_exchange(service_name, config)(conn.default_channel).declare()
    except Exception as exc:  # the relay retries anyway
        log.warning("could not declare the %s.events exchange: %s", service_name, exc)


@dataclasses.dataclass
class _Cached:
    at: float
    value: object
    digest: str | None = None


class ConnectWisePosting(DependencyProvider):
    """Config (services/connectwise/config.yml): POSTING_* (as Autotask), CONNECTWISE_HOURLY_LIMIT (requests
    per budget window), CONNECTWISE_BUDGET_WINDOW_SECONDS, CONNECTWISE_BUDGET_SHARE,
    CONNECTWISE_THREADS_PER_ENDPOINT, CONNECTWISE_SLOT_WAIT_SECONDS, CONNECTWISE_TIMEOUT [connect, read]."""

    CLIENT_TTL = 300.0

    def setup(self):
        config = self.container.config
        self.engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=6)
        self.budget = RequestBudget.from_config(self.engine, models.posting.budget, PSA, config, "CONNECTWISE")
        self.policy = RetryPolicy.from_config(config)
        self.owner = default_owner()
        timeout = config.get("CONNECTWISE_TIMEOUT", [3.05, 30.0])
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.batch = int(config.get("POSTING_BATCH", 500))
        self.concurrency = int(config.get("POSTING_CONCURRENCY", 3))
        self.settle = float(config.get("POSTING_SETTLE_SECONDS", 1.0))
        self.max_delay = float(config.get("POSTING_MAX_DELAY_SECONDS", 10.0))
        self.max_tick = float(config.get("POSTING_MAX_TICK_SECONDS", 60.0))
        self.settings_ttl = float(config.get("POSTING_SETTINGS_TTL", 30.0))
        needed = self.budget.slot_wait + 2 * self.timeout[0] + self.timeout[1] + 5.0
        self.lease = float(config.get("POSTING_LEASE_SECONDS", 90.0))
        if self.lease < needed:
            log.warning("POSTING_LEASE_SECONDS %.1f is shorter than a send can take; using %.1f", self.lease, needed)
            self.lease = needed
        self.vault = Vault.from_config(config)
        self._clients, self._settings = {}, {}
        self._lock = threading.Lock()
        self._last_prune = 0.0
        declare_event_exchange(config, self.container.service_name)

    def stop(self):
        self.engine.dispose()

    def kill(self):
        self.engine.dispose()

    def get_dependency(self, worker_ctx):
        return self

    def new_client(self, tenant_id, document):
        return BudgetedConnectWiseClient(document, budget=self.budget, tenant_id=tenant_id, timeout=self.timeout)

    def client(self, tenant_id, ciphertext):
        """A budgeted client per tenant, cached per credential version."""
        digest = hashlib.sha256(str(ciphertext).encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._clients.get(tenant_id)
            if hit and hit.digest == digest and now - hit.at < self.CLIENT_TTL:
                return hit.value
        client = self.new_client(tenant_id, self.vault.decrypt(ciphertext))
        with self._lock:
            self._clients[tenant_id] = _Cached(now, client, digest)
        return client

    def edited_in_psa(self, tenant_id, fetch):
        """mapping.settings(tenant)["edited_in_psa"], cached briefly; anything but "overwrite" (no
        answer included) means hold."""
        now = time.monotonic()
        with self._lock:
            hit = self._settings.get(tenant_id)
            if hit and now - hit.at < self.settings_ttl:
                return hit.value
        try:
            with eventlet.Timeout(10):
                value = (fetch() or {}).get("edited_in_psa") or "hold"
        except BaseException as exc:  # noqa: BLE001 - eventlet.Timeout is a BaseException
            if isinstance(exc, (KeyboardInterrupt, SystemExit)):
                raise
            log.warning("mapping.settings for tenant %s unavailable (%s); holding edited lines", tenant_id,
                        type(exc).__name__)
            value = "hold"
        value = "overwrite" if value == "overwrite" else "hold"
        with self._lock:
            self._settings[tenant_id] = _Cached(now, value)
        return value

    def poster(self, store, outbox, adapter):
        if time.monotonic() - self._last_prune > 600:
            self._last_prune = time.monotonic()
            try:
                self.budget.prune()
            except Exception:
                log.exception("pruning the request budget failed")
        return Poster(psa=PSA, tables=models.posting, store=store, outbox=outbox, adapter=adapter,
                      policy=self.policy, owner=self.owner, batch_size=self.batch, concurrency=self.concurrency,
                      lease_seconds=self.lease, settle_seconds=self.settle, max_delay_seconds=self.max_delay,
                      max_tick_seconds=self.max_tick)
