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

import datetime as dt
import logging
import time

import eventlet


from common.posting import Unreadable
from common.posting.dependency import PostingDependency
from common.posting.engine import PsaAdapter
from common.posting.metrics import PSA_REQUESTS, PSA_SECONDS
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
    READ_CONCURRENCY = 3   # = the vendor's and the budget's concurrent calls per endpoint (CONNECTWISE_THREADS)

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

        def fetch(aid):
            # additions still billing on or after the window start (cancelledDate > start - 1 day)
            listing = client.additions(aid, as_of=starts[aid] - dt.timedelta(days=1))
            try:
                return aid, listing.all(), bool(listing.malformed)
            except NotFound:
                return aid, None, bool(listing.malformed)

        # the API reads one agreement at a time: a batch over many agreements reads READ_CONCURRENCY
        # of them at once (each still takes one of the tenant's endpoint slots and budget requests),
        # so a batch's read is not a long series of round trips; an error still fails the whole read
        pool = eventlet.GreenPool(max(1, min(self.READ_CONCURRENCY, len(starts))))
        for aid, additions, malformed in pool.imap(fetch, sorted(starts)):
            if additions is None:
                missing.add(aid)
            else:
                by_agreement[aid] = additions
            if malformed:
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


class ConnectWisePosting(PostingDependency):
    """services/connectwise/config.yml: the POSTING_* keys and CONNECTWISE_* budget (requests per budget
    window, CONNECTWISE_BUDGET_WINDOW_SECONDS) and timeout keys."""

    psa = PSA
    prefix = "CONNECTWISE"
    tables = models.posting
    client_class = BudgetedConnectWiseClient
