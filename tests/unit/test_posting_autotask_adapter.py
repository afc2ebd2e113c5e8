"""services/autotask/posting.py without a network: batch reads, endpoint slots, execute."""
import datetime as dt
from decimal import Decimal

import pytest

from common.posting import Unreadable
from common.posting.engine import GroupWork, PlannedOp
from common.vendor_client import MalformedRecord
from services.autotask import planner
from services.autotask.posting import AutotaskAdapter, AutotaskState, BudgetedAutotaskClient, endpoint_entity

TODAY = dt.date(2026, 11, 20)
NEXT = dt.date(2026, 12, 1)


class Result(list):
    def __init__(self, items, malformed=()):
        super().__init__(items)
        self.malformed = list(malformed)


class FakeClient:
    """Answers queries from in-memory ContractServices / ContractServiceUnits, records calls."""

    def __init__(self, services, units, malformed_units=()):
        self.services, self.units, self.malformed_units = services, units, malformed_units
        self.queries, self.writes = [], []

    def query(self, entity, filters, include_fields=None, max_records=500):
        self.queries.append((entity, filters))
        if entity == "ContractServices":
            ids = set(filters[0]["value"])
            return Result([cs for cs in self.services if cs["contractID"] in ids])
        return Result([u for u in self.units if _matches(u, filters)], self.malformed_units)

    def add_adjustment(self, *args, **prices):
        self.writes.append(("adjust", args + tuple(prices.values())))
        return 901

    def add_contract_service(self, *args):
        self.writes.append(("add_service", args))
        return 902

    def update_contract_service_price(self, *args):
        self.writes.append(("price", args))
        return args[1]


def _matches(row, filters):
    def ok(expr):
        op = expr["op"]
        if op == "and":
            return all(ok(e) for e in expr["items"])
        if op == "or":
            return any(ok(e) for e in expr["items"])
        value, field = expr["value"], expr["field"]
        have = row[field]
        if isinstance(have, dt.date):
            have = have.isoformat()
        return {"in": lambda: have in value, "lte": lambda: have <= value, "gte": lambda: have >= value}[op]()
    return all(ok(f) for f in filters)


def work(contract, service, pending_from=TODAY, qty=5):
    desired = [{"date": pending_from.isoformat(), "quantity": qty, "unit_price": "20.00", "unit_cost": "17.00",
                "version": 1, "company_id": "1"}]
    return GroupWork("t", str(contract), str(service), "1", desired, 1, pending_from, None, None, 0, False, None,
                     1, None, 0, [])


def period(csid, contract, service, start, end, units):
    return {"id": csid * 1000 + start.month, "contractID": contract, "contractServiceID": csid, "serviceID": service,
            "startDate": start, "endDate": end, "units": units}


NOV = (dt.date(2026, 11, 1), dt.date(2026, 11, 30))
DEC = (dt.date(2026, 12, 1), dt.date(2026, 12, 31))


def test_one_batch_read_for_many_lines_with_a_window_per_contract():
    services = [{"id": 50 + c, "contractID": c, "serviceID": 7, "unitPrice": Decimal("20"), "unitCost": Decimal("17"),
                 "adjustedPrice": None} for c in range(1, 4)]
    units = [period(50 + c, c, 7, *p, 10) for c in range(1, 4) for p in (NOV, DEC)]
    client = FakeClient(services, units)
    works = [work(1, 7), work(2, 7, pending_from=NEXT), work(3, 7), work(3, 8)]
    states = AutotaskAdapter(None, today=lambda: TODAY).read(client, works)
    assert [q[0] for q in client.queries] == ["ContractServices", "ContractServiceUnits"]
    assert states[("1", "7")].line.periods == (planner.Period(*NOV, 10),)
    assert states[("2", "7")].line.periods == (planner.Period(*DEC, 10),)
    assert states[("3", "8")] == AutotaskState(None)           # no such service on the contract yet
    windows = client.queries[1][1][0]
    assert windows["op"] == "or" and len(windows["items"]) == 2


def test_malformed_units_make_the_contracts_unreadable_not_empty():
    services = [{"id": 51, "contractID": 1, "serviceID": 7, "unitPrice": Decimal("20"), "unitCost": None,
                 "adjustedPrice": None}]
    client = FakeClient(services, [], malformed_units=[MalformedRecord(51001, "units", "negative")])
    states = AutotaskAdapter(None, today=lambda: TODAY).read(client, [work(1, 7)])
    assert isinstance(states[("1", "7")], Unreadable)


def test_non_numeric_ids_are_unreadable():
    states = AutotaskAdapter(None, today=lambda: TODAY).read(FakeClient([], []), [work("abc", 7)])
    assert isinstance(states[("abc", "7")], Unreadable)


def test_unit_queries_pack_500_ids_and_50_windows():
    by_contract = {c: (TODAY, TODAY + dt.timedelta(days=c % 60)) for c in range(1, 1201)}
    queries = AutotaskAdapter._unit_queries(by_contract)
    assert sum(len(q["contracts"]) for q in queries) == 1200
    for q in queries:
        assert len(q["contracts"]) <= 500
        expr = q["filters"][0]
        assert expr["op"] == "and" or len(expr["items"]) <= 50
    single = AutotaskAdapter._unit_queries({c: (TODAY, TODAY) for c in range(1, 1001)})
    assert len(single) == 2 and single[0]["filters"][0]["op"] == "and"


def test_execute_sends_each_kind():
    client = FakeClient([], [])
    adapter = AutotaskAdapter(None)
    w = work(1, 7)
    assert adapter.execute(client, w, PlannedOp("add_service", TODAY, unit_price=Decimal("20"),
                                                unit_cost=Decimal("17"))) == 902
    assert adapter.execute(client, w, PlannedOp("adjust", TODAY, unit_change=-3,
                                                params={"contract_service_id": 55})) == 901
    adapter.execute(client, w, PlannedOp("price", TODAY, unit_price=Decimal("21.5"),
                                         params={"contract_service_id": 55}))
    assert adapter.execute(client, w, PlannedOp("adjust", TODAY, unit_change=4, unit_price=Decimal("20"),
                                                unit_cost=Decimal("17"),
                                                params={"contract_service_id": None, "creates_service": True})) == 901
    assert client.writes == [("add_service", (1, 7, Decimal("20"), Decimal("17"))),
                             ("adjust", (1, 7, 55, -3, TODAY)), ("price", (1, 55, Decimal("21.5"))),
                             ("adjust", (1, 7, None, 4, TODAY, Decimal("20"), Decimal("17")))]
    with pytest.raises(ValueError):
        adapter.execute(client, w, PlannedOp("price", TODAY, unit_price=Decimal("1")))


@pytest.mark.parametrize("endpoint, entity", [
    ("POST /ContractServiceUnits/query", "ContractServiceUnits"),
    ("POST /ContractServices/query/next", "ContractServices"),
    ("POST /Contracts/{id}/Services", "ContractServices"),
    ("PATCH /Contracts/{id}/Services", "ContractServices"),
    ("POST /ContractServiceAdjustments", "ContractServiceAdjustments"),
    ("POST /Contracts/{id}/Charges", "ContractCharges"),
    ("GET /Companies/{id}", "Companies"),
])
def test_endpoint_entity(endpoint, entity):
    assert endpoint_entity(endpoint) == entity


def test_the_budget_wraps_every_attempt_but_zone_lookups():
    calls = []

    class Budget:
        def request(self, tenant_id, key):
            calls.append((tenant_id, key))
            import contextlib
            return contextlib.nullcontext()

    class Session:
        def request(self, method, url, **kw):
            import requests
            r = requests.Response()
            r.status_code = 200
            r._content = (b'{"url": "http://at.example/ATServicesRest/"}' if "ZoneInformation" in url
                          else b'{"itemId": 77}')
            return r

    client = BudgetedAutotaskClient({"api_user": "u", "secret": "s", "integration_code": "c",
                                     "zone_url": "http://at.example/atservicesrest/v1.0/"},
                                    budget=Budget(), tenant_id="t1", session=Session())
    assert client.add_adjustment(1, 7, None, 2, TODAY) == 77
    assert calls == [("t1", "ContractServiceAdjustments")]
