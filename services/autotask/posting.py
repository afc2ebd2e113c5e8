"""Autotask posting: the kit's loop (common.posting) with Autotask's reads, plan and writes.

- ``BudgetedAutotaskClient``: the client (services/autotask/client.py, unchanged) whose every
  request attempt first takes a cross-replica slot for its entity endpoint (at most 3 in flight)
  and one request of the tenant's hourly budget (40 % of 10,000 by default), and is counted in
  psa_requests_total / psa_request_seconds. Zone lookups and ThresholdInformation are free (the
  vendor does not count them).
- ``AutotaskAdapter.read``: one batch read for up to 500 lines: ContractServices by ``contractID
  in [...]`` and ContractServiceUnits by ``contractID in [...]`` restricted to each line's window
  of periods (an ``or`` of one ``and`` per distinct window), 500 ids and 500 records a page.
- ``AutotaskAdapter.plan``: services/autotask/planner.py.
- ``AutotaskAdapter.execute``: add_contract_service / add_adjustment / update_contract_service_price.
- ``AutotaskPosting``: the nameko dependency holding the budget, retry policy, settings and the
  client cache; ``poster(store, outbox, adapter)`` builds the loop for one timer tick.
"""
from __future__ import annotations

import dataclasses
import datetime as dt
import logging
import time


from common.posting import Unreadable
from common.posting.dependency import PostingDependency
from common.posting.engine import PsaAdapter
from common.posting.metrics import PSA_REQUESTS, PSA_SECONDS
from common.vendor_client import VendorError
from services.autotask import models, planner
from services.autotask.client import IN_BATCH, MAX_RECORDS, ZONE_ENDPOINT, AutotaskClient, F
from services.autotask.schemas import to_decimal

log = logging.getLogger(__name__)

PSA = "autotask"
FREE_ENDPOINTS = {ZONE_ENDPOINT, "GET /ThresholdInformation"}
_CHILDREN = {"Services": "ContractServices", "ServiceAdjustments": "ContractServiceAdjustments",
             "Charges": "ContractCharges", "ServiceUnits": "ContractServiceUnits"}
MAX_WINDOWS_PER_QUERY = 50


def endpoint_entity(endpoint):
    """The vendor's "object endpoint" of a metrics label: its thread limit is per entity.
    "POST /Contracts/{id}/Services" -> ContractServices, "POST /ContractServiceUnits/query" -> ContractServiceUnits."""
    parts = endpoint.split(" ", 1)[-1].strip("/").split("/")
    if parts and parts[0] == "Contracts" and len(parts) >= 3 and parts[2] in _CHILDREN:
        return _CHILDREN[parts[2]]
    return parts[0] if parts else endpoint


class BudgetedAutotaskClient(AutotaskClient):
    """AutotaskClient whose every attempt (retries too) is budgeted, slotted and measured."""

    def __init__(self, credentials, *, budget=None, tenant_id=None, **kwargs):
        super().__init__(credentials, **kwargs)
        self.budget = budget
        self.tenant_id = tenant_id

    def _attempt(self, method, url, endpoint, attempt, **kw):
        if self.budget is None or endpoint in FREE_ENDPOINTS:
            return super()._attempt(method, url, endpoint, attempt, **kw)
        with self.budget.request(self.tenant_id, endpoint_entity(endpoint)):
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


@dataclasses.dataclass(frozen=True)
class AutotaskState:
    line: planner.AutotaskLine | None


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _chunks(items, size):
    return [items[i:i + size] for i in range(0, len(items), size)]


class AutotaskAdapter(PsaAdapter):
    psa = PSA

    def __init__(self, client_factory, settings_lookup=None, today=None):
        self._client_factory = client_factory
        self._settings = settings_lookup
        self._today = today or (lambda: dt.datetime.now(dt.timezone.utc).date())

    def client(self, tenant_id):
        return self._client_factory(tenant_id)

    def edited_in_psa(self, tenant_id):
        return self._settings(tenant_id) if self._settings else "hold"

    # --- read ----------------------------------------------------------------------------------
    def read(self, client, works):
        today = self._today()
        out = {}
        by_contract = {}
        for w in works:
            cid, sid = _int(w.contract_id), _int(w.service_id)
            if cid is None or sid is None:
                out[w.key] = Unreadable(f"contract {w.contract_id!r} / service {w.service_id!r} is not an Autotask id")
                continue
            start, end = planner.window(w, today)
            lo, hi = by_contract.get(cid, (start, end))
            by_contract[cid] = (min(lo, start), max(hi, end))
        contract_ids = sorted(by_contract)
        services, bad_contracts = {}, set()
        for chunk in _chunks(contract_ids, IN_BATCH):
            result = client.query("ContractServices", [F.in_("contractID", chunk)], max_records=MAX_RECORDS)
            for cs in result:
                services[(int(cs["contractID"]), int(cs["serviceID"]))] = cs
            if result.malformed:
                bad_contracts.update(chunk)
        periods = {}
        for query in self._unit_queries(by_contract):
            result = client.query("ContractServiceUnits", query["filters"], max_records=MAX_RECORDS)
            for row in result:
                periods.setdefault(int(row["contractServiceID"]), []).append(
                    planner.Period(row["startDate"], row["endDate"], int(row.get("units") or 0)))
            if result.malformed:
                bad_contracts.update(query["contracts"])
        for w in works:
            if w.key in out:
                continue
            cid, sid = int(w.contract_id), int(w.service_id)
            if cid in bad_contracts:
                out[w.key] = Unreadable("the PSA returned malformed records for this contract (quarantined)")
                continue
            cs = services.get((cid, sid))
            if cs is None:
                out[w.key] = AutotaskState(None)
                continue
            out[w.key] = AutotaskState(planner.AutotaskLine(
                int(cs["id"]), _money(cs.get("unitPrice")), _money(cs.get("unitCost")),
                _money(cs.get("adjustedPrice")),
                tuple(sorted(periods.get(int(cs["id"]), ()), key=lambda p: p.start))))
        return out

    @staticmethod
    def _unit_queries(by_contract):
        """ContractServiceUnits queries: contracts grouped by their window of periods, at most 500
        ids and MAX_WINDOWS_PER_QUERY windows per query."""
        windows = {}
        for cid, win in sorted(by_contract.items()):
            windows.setdefault(win, []).append(cid)
        queries, current, ids = [], [], 0

        def flush():
            nonlocal current, ids
            if current:
                parts = [F.and_(F.in_("contractID", cids), F.lte("startDate", end), F.gte("endDate", start))
                         for (start, end), cids in current]
                filters = [parts[0]] if len(parts) == 1 else [F.or_(*parts)]
                queries.append({"filters": filters, "contracts": [c for _, cids in current for c in cids]})
            current, ids = [], 0

        for win, cids in windows.items():
            for part in _chunks(cids, IN_BATCH):
                if ids + len(part) > IN_BATCH or len(current) >= MAX_WINDOWS_PER_QUERY:
                    flush()
                current.append((win, part))
                ids += len(part)
        flush()
        return queries

    # --- plan and write ------------------------------------------------------------------------
    def plan(self, work, state):
        return planner.plan_line(work, state.line, self._today())

    def execute(self, client, work, op):
        contract, service = int(work.contract_id), int(work.service_id)
        csid = op.params.get("contract_service_id") or _int(work.vendor_line_id)
        if op.kind == planner.ADD_SERVICE:
            return client.add_contract_service(contract, service, op.unit_price, op.unit_cost)
        if op.kind == planner.ADJUST:
            if op.params.get("creates_service"):   # the ContractService is made by this adjustment
                return client.add_adjustment(contract, service, None, int(op.unit_change), op.effective_date,
                                             adjusted_unit_price=op.unit_price, adjusted_unit_cost=op.unit_cost)
            return client.add_adjustment(contract, service, csid, int(op.unit_change), op.effective_date)
        if op.kind == planner.PRICE:
            if csid is None:
                raise ValueError("price change without a contract service id")
            return client.update_contract_service_price(contract, int(csid), op.unit_price)
        raise ValueError(f"unknown Autotask operation {op.kind!r}")


def _money(value):
    return None if value is None else to_decimal(value)


class AutotaskPosting(PostingDependency):
    """services/autotask/config.yml: the POSTING_* keys and AUTOTASK_* budget and timeout keys."""

    psa = PSA
    prefix = "AUTOTASK"
    tables = models.posting
    client_class = BudgetedAutotaskClient
