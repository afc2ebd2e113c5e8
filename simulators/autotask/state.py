"""Autotask data: entity schemas, per-database tables with indexes, and the write rules.

One Store holds several "databases" (Autotask tenants); each credential set
belongs to exactly one. Validation follows the vendor's documented rules for
the billing entities; anything refused raises WriteError, which the routes turn
into {"errors": [...]}.
"""
from __future__ import annotations

import bisect
import datetime as dt
import itertools
import re
from typing import Any, Callable, Iterator

from .query import Compiled, QueryError, coerce
from .units import Ledger, Periods, add_months, fmt_date, fmt_datetime, to_date

RECURRING_SERVICE = 7   # contractType "Recurring Service"
ACTIVE = 1              # contract status "Active"

ENTITIES: dict[str, dict[str, str]] = {
    "Companies": {
        "id": "int", "companyName": "str", "companyNumber": "str", "companyType": "int",
        "isActive": "bool", "phone": "str", "webAddress": "str", "createDate": "datetime",
        "lastTrackedModifiedDateTime": "datetime"},
    "Contracts": {
        "id": "int", "companyID": "int", "contractName": "str", "contractNumber": "str",
        "contractType": "int", "status": "int", "startDate": "date", "endDate": "date",
        "contractPeriodType": "str", "billingPreference": "int", "description": "str",
        "lastModifiedDateTime": "datetime"},
    "Services": {
        "id": "int", "name": "str", "description": "str", "invoiceDescription": "str",
        "unitPrice": "decimal", "unitCost": "decimal", "periodType": "int", "isActive": "bool",
        "lastModifiedDate": "datetime"},
    "ContractServices": {
        "id": "int", "contractID": "int", "serviceID": "int", "unitPrice": "decimal",
        "unitCost": "decimal", "adjustedPrice": "decimal", "internalDescription": "str",
        "invoiceDescription": "str"},
    "ContractServiceAdjustments": {
        "id": "int", "contractID": "int", "serviceID": "int", "contractServiceID": "int",
        "unitChange": "int", "effectiveDate": "date", "adjustedUnitPrice": "decimal",
        "adjustedUnitCost": "decimal"},
    "ContractServiceUnits": {
        "id": "int", "contractID": "int", "contractServiceID": "int", "serviceID": "int",
        "startDate": "date", "endDate": "date", "units": "int", "price": "decimal",
        "cost": "decimal", "approveAndPostDate": "datetime"},
    "ContractCharges": {
        "id": "int", "contractID": "int", "name": "str", "description": "str",
        "unitQuantity": "decimal", "unitPrice": "decimal", "unitCost": "decimal",
        "datePurchased": "date", "chargeType": "int", "status": "int",
        "isBillableToCompany": "bool", "isBilled": "bool", "productID": "int",
        "billingCodeID": "int", "createDate": "datetime"},
}
ENTITY_BY_LOWER = {name.lower(): name for name in ENTITIES}
UDF_ENTITIES = {"Companies", "Contracts", "Services"}   # these carry userDefinedFields: []
QUERYABLE = set(ENTITIES) - {"ContractServiceAdjustments"}
READ_ONLY_FIELDS = {"id", "createDate", "lastTrackedModifiedDateTime", "lastModifiedDateTime",
                    "lastModifiedDate"}
CS_WRITABLE_AFTER_CREATE = {"adjustedPrice", "invoiceDescription"}
INDEXED = {"Contracts": ("companyID",), "ContractServices": ("contractID", "serviceID"),
           "ContractCharges": ("contractID",)}
REQUIRED = {
    "Companies": ("companyName", "companyType"),
    "Contracts": ("companyID", "contractName", "contractType", "startDate", "endDate"),
    "Services": ("name", "unitPrice", "periodType"),
    "ContractServices": ("contractID", "serviceID", "unitPrice"),
    "ContractServiceAdjustments": ("contractID", "unitChange", "effectiveDate"),
    "ContractCharges": ("contractID", "name", "datePurchased", "unitQuantity"),
}
DEFAULTS = {
    "Companies": {"isActive": True},
    "Contracts": {"status": ACTIVE, "contractPeriodType": "m", "billingPreference": 1},
    "Services": {"isActive": True},
    "ContractCharges": {"chargeType": 1, "status": 1, "isBillableToCompany": True,
                        "isBilled": False},
}


class WriteError(Exception):
    def __init__(self, status: int, *messages: str):
        super().__init__("; ".join(messages))
        self.status = status
        self.messages = list(messages)


def _key(name: str) -> str:
    return name.lower().replace("_", "")


def normalize(body: Any, entity: str, loose: bool = False) -> dict:
    """Input field names are case-insensitive; unknown fields are ignored.

    loose=True (seed documents only) also accepts snake_case (company_id).
    Values are coerced to the field type; a bad value is a 500 like the vendor.
    """
    if not isinstance(body, dict):
        raise WriteError(500, f"The request body for {entity} must be a JSON object.")
    fields = ENTITIES[entity]
    lookup = {(_key(f) if loose else f.lower()): f for f in fields}
    out = {}
    for raw_key, value in body.items():
        canon = lookup.get(_key(raw_key) if loose else str(raw_key).lower())
        if canon is None:
            continue
        try:
            out[canon] = coerce(value, fields[canon], canon)
        except QueryError as exc:
            raise WriteError(500, str(exc)) from None
    return out


class Table:
    """Rows by id, kept in id order, with value->ids indexes on a few foreign keys."""

    def __init__(self, entity: str):
        self.entity = entity
        self.rows: dict[int, dict] = {}
        self.index: dict[str, dict[Any, set]] = {f: {} for f in INDEXED.get(entity, ())}
        self._order: list[int] = []

    def insert(self, row: dict) -> None:
        rid = row["id"]
        self.rows[rid] = row
        if not self._order or rid > self._order[-1]:
            self._order.append(rid)
        else:
            bisect.insort(self._order, rid)
        for field, idx in self.index.items():
            idx.setdefault(row.get(field), set()).add(rid)

    def update(self, rid: int, changes: dict) -> dict:
        row = self.rows[rid]
        for field, idx in self.index.items():
            if field in changes and changes[field] != row.get(field):
                idx.get(row.get(field), set()).discard(rid)
                idx.setdefault(changes[field], set()).add(rid)
        row.update(changes)
        return row

    def delete(self, rid: int) -> None:
        row = self.rows.pop(rid)
        self._order.remove(rid)
        for field, idx in self.index.items():
            idx.get(row.get(field), set()).discard(rid)

    def ids_where(self, field: str, value: Any) -> set:
        return self.index[field].get(value, set())

    def candidates(self, hints: dict[str, set]) -> list[int]:
        """Sorted ids that may match, narrowed by top-level eq/in hints."""
        sets = []
        if "id" in hints:
            sets.append({i for i in hints["id"] if i in self.rows})
        for field, values in hints.items():
            if field in self.index:
                idx = self.index[field]
                sets.append(set().union(*(idx.get(v, set()) for v in values)) if values else set())
        if not sets:
            return self._order
        sets.sort(key=len)
        found = sets[0].intersection(*sets[1:])
        return sorted(found)


class Database:
    """One Autotask tenant database: its tables, unit ledgers and credentials."""

    def __init__(self, ci: int, name: str, zone: str, zone_name: str, web_url: str, id_base: int,
                 today: Callable[[], dt.date]):
        self.ci = ci
        self.name = name
        self.zone = zone
        self.zone_name = zone_name
        self.web_url = web_url
        self.credentials: list[dict] = []
        self.tables = {name: Table(name) for name in ENTITIES if name != "ContractServiceUnits"}
        self.ledgers: dict[int, Ledger] = {}
        self.cs_created: dict[int, dt.date] = {}
        self.cs_by_pair: dict[tuple[int, int], int] = {}
        self._ids = itertools.count(id_base)
        self._periods: dict[tuple, Periods] = {}
        self.today = today

    # --- helpers -------------------------------------------------------------
    def next_id(self) -> int:
        return next(self._ids)

    def bump_ids(self, used: int) -> None:
        """Explicit ids in a seed must not be handed out again."""
        peek = next(self._ids)
        self._ids = itertools.count(max(peek, used + 1))

    def now_wire(self) -> str:
        now = dt.datetime.now(dt.timezone.utc).replace(tzinfo=None)
        today = self.today()
        if today != now.date():
            now = dt.datetime.combine(today, dt.time(12, 0))
        return fmt_datetime(now)

    def periods_for(self, contract: dict) -> Periods:
        start = to_date(contract["startDate"])
        end = to_date(contract["endDate"]) if contract.get("endDate") else None
        horizon = add_months(self.today(), 12) if end is None else None
        key = (start, end, horizon)
        cached = self._periods.get(key)
        if cached is None:
            if len(self._periods) > 4096:
                self._periods.clear()
            cached = self._periods[key] = Periods(start, end, horizon or end)
        return cached

    def get_row(self, entity: str, rid: int) -> dict | None:
        if entity == "ContractServiceUnits":
            return self.unit_row(rid)
        return self.tables[entity].rows.get(rid)

    def _contract(self, cid: Any, for_services: bool) -> dict:
        contract = self.tables["Contracts"].rows.get(cid) if cid is not None else None
        if contract is None:
            raise WriteError(500, f"Contract with id {cid} does not exist.")
        if for_services:
            if contract["contractType"] != RECURRING_SERVICE:
                raise WriteError(500, f"Contract {cid} is not a Recurring Service contract; services "
                                      f"can only be added to Recurring Service contracts.")
            if contract["status"] != ACTIVE:
                raise WriteError(500, f"Contract {cid} is inactive.")
        return contract

    def _service(self, sid: Any) -> dict:
        service = self.tables["Services"].rows.get(sid) if sid is not None else None
        if service is None:
            raise WriteError(500, f"Service with id {sid} does not exist.")
        if not service["isActive"]:
            raise WriteError(500, f"Service {sid} is inactive and cannot be added to a contract.")
        return service

    @staticmethod
    def _require(entity: str, values: dict) -> None:
        missing = [f for f in REQUIRED[entity] if values.get(f) in (None, "")]
        if missing:
            raise WriteError(500, *[f"Value does not exist for the required field {f}." for f in missing])

    def _blank(self, entity: str) -> dict:
        return {f: None for f in ENTITIES[entity]}

    # --- creates -------------------------------------------------------------
    def create(self, entity: str, body: dict, contract_id: int | None = None) -> int:
        values = normalize(body, entity)
        values.pop("id", None)
        if contract_id is not None:
            if values.get("contractID") not in (None, contract_id):
                raise WriteError(500, f"contractID {values['contractID']} does not match the "
                                      f"parent contract {contract_id}.")
            values["contractID"] = contract_id
        return getattr(self, "_create_" + entity)(values)

    def _insert(self, entity: str, values: dict, rid: int | None = None) -> dict:
        row = self._blank(entity)
        row.update(DEFAULTS.get(entity, {}))
        row.update({k: v for k, v in values.items() if v is not None or k not in DEFAULTS.get(entity, {})})
        row["id"] = rid if rid is not None else self.next_id()
        if "createDate" in row and row["createDate"] is None:
            row["createDate"] = self.now_wire()
        self.tables[entity].insert(row)
        return row

    def _create_Companies(self, v: dict) -> int:
        self._require("Companies", v)
        return self._insert("Companies", v)["id"]

    def _check_contract_values(self, v: dict) -> None:
        if v.get("companyID") is not None and v["companyID"] not in self.tables["Companies"].rows:
            raise WriteError(500, f"Company with id {v['companyID']} does not exist.")
        if v.get("startDate") and v.get("endDate") and v["endDate"] < v["startDate"]:
            raise WriteError(500, "endDate must be on or after startDate.")

    def _create_Contracts(self, v: dict) -> int:
        self._require("Contracts", v)
        self._check_contract_values(v)
        return self._insert("Contracts", v)["id"]

    def _create_Services(self, v: dict) -> int:
        self._require("Services", v)
        return self._insert("Services", v)["id"]

    def _create_ContractServices(self, v: dict) -> int:
        self._require("ContractServices", v)
        contract = self._contract(v["contractID"], for_services=True)
        self._service(v["serviceID"])
        if (v["contractID"], v["serviceID"]) in self.cs_by_pair:
            raise WriteError(500, f"Service {v['serviceID']} is already on contract {v['contractID']}.")
        created = max(self.today(), to_date(contract["startDate"]))
        return self.add_contract_service(v, created)["id"]

    def add_contract_service(self, v: dict, created: dt.date, rid: int | None = None) -> dict:
        row = self._insert("ContractServices", v, rid)
        self.cs_by_pair[(row["contractID"], row["serviceID"])] = row["id"]
        ledger = self.ledgers[row["id"]] = Ledger()
        price = row["adjustedPrice"] if row["adjustedPrice"] is not None else row["unitPrice"]
        ledger.set_price(created, price, row["unitCost"])
        self.cs_created[row["id"]] = created
        return row

    def _create_ContractServiceAdjustments(self, v: dict) -> int:
        if v.get("serviceID") is None and v.get("contractServiceID") is None:
            raise WriteError(500, "Value does not exist for the required field serviceID.")
        self._require("ContractServiceAdjustments", v)
        contract = self._contract(v["contractID"], for_services=True)
        if v["unitChange"] == 0:
            raise WriteError(500, "unitChange must not be zero.")
        day = to_date(v["effectiveDate"])
        if day < to_date(contract["startDate"]) or (contract["endDate"] and day > to_date(contract["endDate"])):
            raise WriteError(500, f"effectiveDate {v['effectiveDate'][:10]} is outside the contract's "
                                  f"dates ({contract['startDate'][:10]} to {(contract['endDate'] or '')[:10]}).")
        cs_rows = self.tables["ContractServices"].rows
        if v.get("contractServiceID") is not None:
            cs = cs_rows.get(v["contractServiceID"])
            if cs is None or cs["contractID"] != v["contractID"]:
                raise WriteError(500, f"ContractService with id {v['contractServiceID']} does not exist "
                                      f"on contract {v['contractID']}.")
            if v.get("serviceID") not in (None, cs["serviceID"]):
                raise WriteError(500, "serviceID does not match the contractServiceID.")
        else:
            csid = self.cs_by_pair.get((v["contractID"], v["serviceID"]))
            cs = cs_rows.get(csid) if csid else None
        if cs is None:
            service = self._service(v["serviceID"])
            if v["unitChange"] < 0:
                raise WriteError(500, "The adjustment would make the number of units negative.")
            cs = self.add_contract_service({
                "contractID": v["contractID"], "serviceID": v["serviceID"],
                "unitPrice": v["adjustedUnitPrice"] if v.get("adjustedUnitPrice") is not None else service["unitPrice"],
                "unitCost": v["adjustedUnitCost"] if v.get("adjustedUnitCost") is not None else service["unitCost"],
                "invoiceDescription": service["invoiceDescription"],
            }, created=day)
        else:
            self._service_exists(cs["serviceID"])
        ledger = self.ledgers[cs["id"]]
        if ledger.would_go_negative(day, v["unitChange"]):
            raise WriteError(500, "The adjustment would make the number of units negative.")
        return self.apply_adjustment(cs, day, v)["id"]

    def _service_exists(self, sid: int) -> None:
        service = self.tables["Services"].rows.get(sid)
        if service is not None and not service["isActive"]:
            raise WriteError(500, f"Service {sid} is inactive.")

    def apply_adjustment(self, cs: dict, day: dt.date, v: dict, rid: int | None = None) -> dict:
        ledger = self.ledgers[cs["id"]]
        ledger.add(day, int(v["unitChange"]))
        if v.get("adjustedUnitPrice") is not None or v.get("adjustedUnitCost") is not None:
            cur_price, cur_cost = ledger.price_at(day)
            price = v["adjustedUnitPrice"] if v.get("adjustedUnitPrice") is not None else cur_price
            cost = v["adjustedUnitCost"] if v.get("adjustedUnitCost") is not None else cur_cost
            ledger.set_price(day, price, cost)
            if price != cs["unitPrice"]:
                self.tables["ContractServices"].update(cs["id"], {"adjustedPrice": price})
        row = {"contractID": cs["contractID"], "serviceID": cs["serviceID"], "contractServiceID": cs["id"],
               "unitChange": int(v["unitChange"]), "effectiveDate": fmt_date(day),
               "adjustedUnitPrice": v.get("adjustedUnitPrice"), "adjustedUnitCost": v.get("adjustedUnitCost")}
        self.cs_created[cs["id"]] = min(self.cs_created[cs["id"]], day)
        return self._insert("ContractServiceAdjustments", row, rid)

    def _create_ContractCharges(self, v: dict) -> int:
        self._require("ContractCharges", v)
        self._contract(v["contractID"], for_services=False)
        if v.get("productID") is None and v.get("billingCodeID") is None:
            raise WriteError(500, "Either productID or billingCodeID is required.")
        v.pop("isBilled", None)  # set by invoicing, never by the API
        return self._insert("ContractCharges", v)["id"]

    # --- updates -------------------------------------------------------------
    def update(self, entity: str, body: dict, replace: bool, contract_id: int | None = None) -> int:
        values = normalize(body, entity)
        rid = values.get("id")
        if rid is None:
            raise WriteError(500, "Value does not exist for the required field id.")
        row = self.tables[entity].rows.get(rid)
        if row is None or (contract_id is not None and row.get("contractID") != contract_id):
            raise WriteError(404, f"{entity} with id {rid} does not exist.")
        changes = {k: v for k, v in values.items() if k not in READ_ONLY_FIELDS}
        if replace:
            # PUT: every writable field not sent becomes null (defaults for required flags)
            for field in ENTITIES[entity]:
                if field not in READ_ONLY_FIELDS and field not in changes:
                    changes[field] = DEFAULTS.get(entity, {}).get(field)
            if contract_id is not None:
                changes["contractID"] = contract_id
        return getattr(self, "_update_" + entity)(row, changes, replace)

    def _update_Companies(self, row: dict, ch: dict, replace: bool) -> int:
        merged = {**row, **ch}
        self._require("Companies", merged)
        ch["lastTrackedModifiedDateTime"] = self.now_wire()
        return self.tables["Companies"].update(row["id"], ch)["id"]

    def _update_Contracts(self, row: dict, ch: dict, replace: bool) -> int:
        merged = {**row, **ch}
        self._require("Contracts", merged)
        self._check_contract_values(merged)
        ch["lastModifiedDateTime"] = self.now_wire()
        return self.tables["Contracts"].update(row["id"], ch)["id"]

    def _update_Services(self, row: dict, ch: dict, replace: bool) -> int:
        self._require("Services", {**row, **ch})
        ch["lastModifiedDate"] = self.now_wire()
        return self.tables["Services"].update(row["id"], ch)["id"]

    def _update_ContractServices(self, row: dict, ch: dict, replace: bool) -> int:
        # after creation only adjustedPrice and invoiceDescription may change;
        # re-sending an unchanged value is tolerated (read-modify-write clients)
        bad = sorted(f for f, v in ch.items() if f not in CS_WRITABLE_AFTER_CREATE and v != row.get(f)
                     and not (replace and v is None))
        if bad:
            raise WriteError(500, *[f"The field {f} is read-only after the contract service is created."
                                    for f in bad])
        self._contract(row["contractID"], for_services=True)
        allowed = {f: v for f, v in ch.items() if f in CS_WRITABLE_AFTER_CREATE}
        if "adjustedPrice" in allowed and allowed["adjustedPrice"] != row["adjustedPrice"]:
            price = allowed["adjustedPrice"] if allowed["adjustedPrice"] is not None else row["unitPrice"]
            self.ledgers[row["id"]].set_price(self.today(), price, row["unitCost"])
        return self.tables["ContractServices"].update(row["id"], allowed)["id"]

    def _update_ContractCharges(self, row: dict, ch: dict, replace: bool) -> int:
        if row["isBilled"]:
            raise WriteError(500, f"ContractCharge {row['id']} has been billed and can no longer be changed.")
        ch.pop("isBilled", None)
        merged = {**row, **ch}
        self._require("ContractCharges", merged)
        if merged.get("productID") is None and merged.get("billingCodeID") is None:
            raise WriteError(500, "Either productID or billingCodeID is required.")
        if ch.get("contractID") not in (None, row["contractID"]):
            raise WriteError(500, "contractID cannot be changed.")
        return self.tables["ContractCharges"].update(row["id"], ch)["id"]

    def delete(self, entity: str, rid: int, contract_id: int) -> None:
        row = self.tables[entity].rows.get(rid)
        if row is None or row.get("contractID") != contract_id:
            raise WriteError(404, f"{entity} with id {rid} does not exist.")
        if row["isBilled"]:
            raise WriteError(500, f"ContractCharge {rid} has been billed and cannot be deleted.")
        self.tables[entity].delete(rid)

    # --- reads ---------------------------------------------------------------
    def rows(self, entity: str, compiled: Compiled, after_id: int | None = None) -> Iterator[dict]:
        """Matching rows in ascending id order, starting after `after_id`."""
        if entity == "ContractServiceUnits":
            yield from self._unit_rows(compiled, after_id)
            return
        table = self.tables[entity]
        ids = table.candidates(compiled.hints)
        start = bisect.bisect_right(ids, after_id) if after_id is not None else 0
        pred = compiled.predicate
        rows = table.rows
        for i in range(start, len(ids)):
            row = rows.get(ids[i])
            if row is not None and pred(row):
                yield row

    def unit_row(self, rid: int) -> dict | None:
        csid, k = divmod(rid, 1000)
        cs = self.tables["ContractServices"].rows.get(csid)
        if cs is None:
            return None
        for row in self._unit_rows_for(cs, None, None):
            if row["id"] == rid:
                return row
        return None

    def _unit_rows(self, compiled: Compiled, after_id: int | None) -> Iterator[dict]:
        hints = {}
        for src, dst in (("contractID", "contractID"), ("serviceID", "serviceID"), ("contractServiceID", "id")):
            if src in compiled.hints:
                hints[dst] = compiled.hints[src] if dst not in hints else hints[dst] & compiled.hints[src]
        if "id" in compiled.hints:
            ids = {i // 1000 for i in compiled.hints["id"]}
            hints["id"] = hints["id"] & ids if "id" in hints else ids
        cs_table = self.tables["ContractServices"]
        cs_ids = cs_table.candidates(hints)
        start = bisect.bisect_left(cs_ids, after_id // 1000) if after_id is not None else 0
        pred = compiled.predicate
        for i in range(start, len(cs_ids)):
            cs = cs_table.rows.get(cs_ids[i])
            if cs is None:
                continue
            for row in self._unit_rows_for(cs, compiled.ranges, after_id):
                if pred(row):
                    yield row

    def _unit_rows_for(self, cs: dict, ranges: dict | None, after_id: int | None) -> Iterator[dict]:
        contract = self.tables["Contracts"].rows.get(cs["contractID"])
        if contract is None or not contract.get("startDate"):
            return
        periods = self.periods_for(contract)
        ledger = self.ledgers[cs["id"]]
        first = self.cs_created.get(cs["id"], periods.start)
        base = cs["id"] * 1000
        for k in range(periods.index_of(first), len(periods)):
            rid = base + k
            if after_id is not None and rid <= after_id:
                continue
            s_wire, e_wire = periods.start_wire[k], periods.end_wire[k]
            if ranges and not (_in_ranges(ranges.get("startDate"), s_wire)
                               and _in_ranges(ranges.get("endDate"), e_wire)):
                continue
            price, cost = ledger.price_at(periods.starts[k])
            yield {"id": rid, "contractID": cs["contractID"], "contractServiceID": cs["id"],
                   "serviceID": cs["serviceID"], "startDate": s_wire, "endDate": e_wire,
                   "units": ledger.units_at(periods.ends[k]), "price": price, "cost": cost,
                   "approveAndPostDate": None}


def _in_ranges(conds: list | None, value: str) -> bool:
    if not conds:
        return True
    for op, target in conds:
        if target is None:
            continue
        if op == "eq" and value != target or op == "gt" and not value > target \
                or op == "gte" and not value >= target or op == "lt" and not value < target \
                or op == "lte" and not value <= target:
            return False
    return True


_ZONE_DIGITS = re.compile(r"(\d+)$")


class Store:
    """All databases, and credential lookup."""

    def __init__(self, today: Callable[[], dt.date]):
        self.today = today
        self.databases: list[Database] = []
        self.by_user: dict[str, tuple[Database, dict]] = {}

    def reset(self) -> None:
        self.databases.clear()
        self.by_user.clear()

    def add_database(self, spec: dict) -> Database:
        k = len(self.databases)
        zone = str(spec.get("zone") or "webservices5")
        digits = _ZONE_DIGITS.search(zone)
        n = digits.group(1) if digits else ""
        ci = int(spec.get("ci") or 800000 + k + 1)
        if any(db.ci == ci for db in self.databases):
            raise ValueError(f"database ci {ci} already exists")
        db = Database(
            ci=ci, name=str(spec.get("name") or f"db{k + 1}"), zone=zone,
            zone_name=str(spec.get("zone_name") or spec.get("zoneName") or f"Simulated zone {zone}"),
            web_url=str(spec.get("web_url") or spec.get("webUrl") or f"https://ww{n}.autotask.net/"),
            # distinct id ranges per database keep admin helper lookups unambiguous
            id_base=int(spec.get("id_base") or 29_680_000 + 10_000_000 * k),
            today=self.today)
        creds = spec.get("credentials") or [default_credentials(k)]
        for cred in creds:
            self.add_credentials(db, cred)
        self.databases.append(db)
        return db

    def add_credentials(self, db: Database, cred: dict) -> None:
        c = {"username": str(cred.get("username") or cred.get("UserName")),
             "secret": str(cred.get("secret") or cred.get("Secret")),
             "integration_code": str(cred.get("integration_code") or cred.get("ApiIntegrationCode")
                                     or cred.get("integrationCode"))}
        if c["username"].lower() in self.by_user:
            raise ValueError(f"username {c['username']} already belongs to a database")
        db.credentials.append(c)
        self.by_user[c["username"].lower()] = (db, c)

    def database_for_user(self, username: str | None) -> Database | None:
        hit = self.by_user.get((username or "").lower())
        return hit[0] if hit else None

    def authenticate(self, code: str | None, username: str | None, secret: str | None) -> Database | None:
        hit = self.by_user.get((username or "").lower())
        if not hit or not code or not secret:
            return None
        db, cred = hit
        if cred["secret"] != secret or cred["integration_code"] != code:
            return None
        return db

    def find(self, ci: int | None) -> Database | None:
        for db in self.databases:
            if ci is None or db.ci == ci:
                return db
        return None

    def locate(self, entity: str, rid: int, ci: int | None = None) -> tuple[Database, dict] | None:
        """Admin helpers: the database holding this record (ids are distinct per database)."""
        for db in self.databases:
            if ci is not None and db.ci != ci:
                continue
            row = db.tables[entity].rows.get(rid)
            if row is not None:
                return db, row
        return None


def default_credentials(k: int) -> dict:
    suffix = "" if k == 0 else str(k + 1)
    return {"username": f"api{suffix}@sim.example", "secret": "secret",
            "integration_code": "SIMINTEGRATIONCODE"}
