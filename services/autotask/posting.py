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
            return client.add_adjustment(contract, service, csid, int(op.unit_change), op.effective_date)
        if op.kind == planner.PRICE:
            if csid is None:
                raise ValueError("price change without a contract service id")
            return client.update_contract_service_price(contract, int(csid), op.unit_price)
        raise ValueError(f"unknown Autotask operation {op.kind!r}")


def _money(value):
    return None if value is None else to_decimal(value)


def declare_event_exchange(config, service_name):
    """Declare "<service>.events" at start-up. The outbox relay publishes to it with `mandatory`
    (an event nobody listens for yet stays in the outbox), but publishing to an exchange that no
    consumer has declared yet fails the whole relay pass instead."""
    from kombu import Connection
    from nameko.constants import AMQP_URI_CONFIG_KEY
    from nameko.events import get_event_exchange

    try:
        with Connection(config[AMQP_URI_CONFIG_KEY], connect_timeout=5) as conn:
            get_event_exchange(service_name, config)(conn.default_channel).declare()
    except Exception as exc:  # the relay retries anyway; the service must not refuse to start for this
        log.warning("could not declare the %s.events exchange: %s", service_name, exc)


class AutotaskPosting(DependencyProvider):
    """Config (services/autotask/config.yml): POSTING_BATCH, POSTING_CONCURRENCY, POSTING_LEASE_SECONDS,
    POSTING_SETTLE_SECONDS, POSTING_MAX_DELAY_SECONDS, POSTING_MAX_TICK_SECONDS, POSTING_MAX_ATTEMPTS, POSTING_BACKOFF [base, cap],
    AUTOTASK_HOURLY_LIMIT, AUTOTASK_BUDGET_SHARE, AUTOTASK_THREADS_PER_ENDPOINT, AUTOTASK_SLOT_WAIT_SECONDS,
    AUTOTASK_TIMEOUT [connect, read], POSTING_SETTINGS_TTL."""

    CLIENT_TTL = 300.0

    def setup(self):
        config = self.container.config
        self.config = config
        self.engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=6)
        self.budget = RequestBudget.from_config(self.engine, models.posting.budget, PSA, config, "AUTOTASK")
        self.policy = RetryPolicy.from_config(config)
        self.owner = default_owner()
        timeout = config.get("AUTOTASK_TIMEOUT", [3.05, 30.0])
        self.timeout = (float(timeout[0]), float(timeout[1]))
        self.batch = int(config.get("POSTING_BATCH", 500))
        self.concurrency = int(config.get("POSTING_CONCURRENCY", 3))
        self.settle = float(config.get("POSTING_SETTLE_SECONDS", 1.0))
        self.max_delay = float(config.get("POSTING_MAX_DELAY_SECONDS", 10.0))
        self.max_tick = float(config.get("POSTING_MAX_TICK_SECONDS", 60.0))
        self.settings_ttl = float(config.get("POSTING_SETTINGS_TTL", 30.0))
        # a send must end before its lease can run out: slot wait + connect (twice, one resend when
        # the connection never opened) + read + margin
        needed = self.budget.slot_wait + 2 * self.timeout[0] + self.timeout[1] + 5.0
        self.lease = float(config.get("POSTING_LEASE_SECONDS", 90.0))
        if self.lease < needed:
            log.warning("POSTING_LEASE_SECONDS %.1f is shorter than a send can take; using %.1f", self.lease, needed)
            self.lease = needed
        self.vault = Vault.from_config(config)
        self._clients = {}
        self._settings = {}
        self._lock = threading.Lock()
        self._last_prune = 0.0
        declare_event_exchange(config, self.container.service_name)

    def stop(self):
        self.engine.dispose()

    def kill(self):
        self.engine.dispose()

    def get_dependency(self, worker_ctx):
        return self

    # --- what workers use ------------------------------------------------------------------------
    def new_client(self, tenant_id, document):
        return BudgetedAutotaskClient(document, budget=self.budget, tenant_id=tenant_id, timeout=self.timeout)

    def client(self, tenant_id, ciphertext):
        """A budgeted client for the tenant, cached per credential version (a changed credential
        makes a new client at once)."""
        digest = hashlib.sha256(str(ciphertext).encode()).hexdigest()
        now = time.monotonic()
        with self._lock:
            hit = self._clients.get(tenant_id)
            if hit and hit[0] == digest and now - hit[1] < self.CLIENT_TTL:
                return hit[2]
        client = self.new_client(tenant_id, self.vault.decrypt(ciphertext))
        with self._lock:
            self._clients[tenant_id] = (digest, now, client)
        return client

    def edited_in_psa(self, tenant_id, fetch):
        """The tenant's edited_in_psa setting via ``fetch()`` (mapping.settings), cached briefly.
        Anything but "overwrite" - including no answer - means hold: never overwrite a person's
        edit on a guess."""
        now = time.monotonic()
        with self._lock:
            hit = self._settings.get(tenant_id)
            if hit and now - hit[0] < self.settings_ttl:
                return hit[1]
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
            self._settings[tenant_id] = (now, value)
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
