"""Loading seed documents and generating deterministic, realistic PSA data.

Seeds are trusted test fixtures: they bypass the API's write rules (a test may
want an inactive service already on a contract) but get the same defaults.
"""
from __future__ import annotations

import datetime as dt
import random
import re

from .state import Database, Store, normalize
from .units import add_months, fmt_date, to_date

# name, MSRP-like monthly unit price (USD), description
M365_SERVICES = [
    ("Microsoft 365 Business Basic", 6.00, "Web and mobile Office apps, Exchange, Teams"),
    ("Microsoft 365 Business Standard", 12.50, "Desktop Office apps, Exchange, Teams"),
    ("Microsoft 365 Business Premium", 22.00, "Business Standard plus Intune and Defender"),
    ("Microsoft 365 Apps for business", 8.25, "Desktop Office apps"),
    ("Microsoft 365 E3", 36.00, "Enterprise productivity and security"),
    ("Microsoft 365 E5", 57.00, "Enterprise productivity, security and analytics"),
    ("Office 365 E1", 10.00, "Enterprise web apps and services"),
    ("Exchange Online (Plan 1)", 4.00, "Hosted mailbox, 50 GB"),
    ("Exchange Online (Plan 2)", 8.00, "Hosted mailbox, 100 GB, archiving"),
    ("Microsoft Teams Essentials", 4.00, "Meetings and chat"),
    ("Microsoft Defender for Business", 3.00, "Endpoint security"),
    ("Microsoft Entra ID P1", 6.00, "Identity and access management"),
    ("Microsoft 365 Copilot", 30.00, "AI assistant for Microsoft 365"),
    ("Microsoft Intune Plan 1", 8.00, "Device management"),
]

_ADJ = ["Blue", "Summit", "Red", "Pine", "Harbor", "Granite", "Silver", "Oak", "Cedar", "River",
        "North", "Bright", "Iron", "Maple", "Golden", "Crescent", "Eagle", "Lake", "Prairie", "Coastal",
        "Frontier", "Keystone", "Liberty", "Meadow", "Pioneer", "Sterling", "Westfield", "Willow"]
_NOUN = ["Ridge", "Valley", "Point", "Bay", "Creek", "Stone", "Field", "Bridge", "Hill", "Grove",
         "Harbor", "Peak", "Springs", "Brook", "Park", "Crossing", "Hollow", "Mills", "Landing", "Heights"]
_TRADE = ["Dental", "Logistics", "Legal", "Accounting", "Manufacturing", "Realty", "Medical Group",
          "Engineering", "Insurance", "Construction", "Veterinary Clinic", "Architects", "Foods",
          "Consulting", "Pharmacy", "Auto Group", "Credit Union", "Academy", "Hotels", "Printing"]
_SUFFIX = ["LLC", "Inc.", "Ltd.", "Co.", "Group", "Partners", "", "", ""]
_TLD = [".com", ".com", ".com", ".net", ".us", ".io"]


def _loose_rows(items, entity: str) -> list[tuple[dict, dict]]:
    """(normalized values, raw) per seed item; raw keeps non-field extras like units."""
    out = []
    for raw in items or []:
        if not isinstance(raw, dict):
            raise ValueError(f"{entity} items must be objects")
        out.append((normalize(raw, entity, loose=True), {k.lower().replace("_", ""): v for k, v in raw.items()}))
    return out


def _insert_seed(db: Database, entity: str, values: dict) -> dict:
    rid = values.pop("id", None)
    if rid is not None:
        db.bump_ids(rid)
    return db._insert(entity, values, rid)


def load_seed(store: Store, doc: dict) -> list[Database]:
    """POST /_sim/seed: {"databases": [...]}; replaces everything unless "append": true."""
    if not isinstance(doc, dict) or not isinstance(doc.get("databases", []), list):
        raise ValueError('seed must be {"databases": [...]}')
    if not doc.get("append"):
        store.reset()
    loaded = []
    for spec in doc.get("databases", []):
        db = store.add_database(spec)
        for v, _ in _loose_rows(spec.get("companies"), "Companies"):
            v.setdefault("companyType", 1)
            _insert_seed(db, "Companies", v)
        for v, _ in _loose_rows(spec.get("services"), "Services"):
            v.setdefault("periodType", 1)
            v.setdefault("unitPrice", 0.0)
            _insert_seed(db, "Services", v)
        for v, _ in _loose_rows(spec.get("contracts"), "Contracts"):
            v.setdefault("contractType", 7)
            v.setdefault("startDate", fmt_date(dt.date(db.today().year, 1, 1)))
            v.setdefault("endDate", fmt_date(add_months(to_date(v["startDate"]), 36) - dt.timedelta(days=1)))
            v.setdefault("contractName", f"Recurring Services {v.get('id') or ''}".strip())
            _insert_seed(db, "Contracts", v)
        for v, raw in _loose_rows(spec.get("contract_services"), "ContractServices"):
            seed_contract_service(db, v, raw)
        for v, raw in _loose_rows(spec.get("adjustments"), "ContractServiceAdjustments"):
            seed_adjustment(db, v)
        for v, raw in _loose_rows(spec.get("charges"), "ContractCharges"):
            isbilled = raw.get("isbilled")
            row = _insert_seed(db, "ContractCharges", v)
            row["isBilled"] = bool(isbilled)
        loaded.append(db)
    return loaded


def seed_contract_service(db: Database, v: dict, raw: dict) -> dict:
    contract = db.tables["Contracts"].rows.get(v.get("contractID"))
    service = db.tables["Services"].rows.get(v.get("serviceID"))
    if contract is None or service is None:
        raise ValueError(f"contract_services item needs an existing contractID and serviceID: {raw}")
    if v.get("unitPrice") is None:
        v["unitPrice"] = service["unitPrice"]
    if v.get("unitCost") is None:
        v["unitCost"] = service["unitCost"]
    rid = v.pop("id", None)
    if rid is not None:
        db.bump_ids(rid)
    start = to_date(contract["startDate"])
    cs = db.add_contract_service(v, created=start, rid=rid)
    units = raw.get("units")
    if units:
        eff = raw.get("effectivedate")
        day = to_date(normalize({"effectiveDate": eff}, "ContractServiceAdjustments")["effectiveDate"]) if eff else start
        db.apply_adjustment(cs, day, {"unitChange": int(units)})
    return cs


def seed_adjustment(db: Database, v: dict) -> dict:
    cs = None
    if v.get("contractServiceID") is not None:
        cs = db.tables["ContractServices"].rows.get(v["contractServiceID"])
    elif v.get("contractID") is not None and v.get("serviceID") is not None:
        csid = db.cs_by_pair.get((v["contractID"], v["serviceID"]))
        cs = db.tables["ContractServices"].rows.get(csid) if csid else None
        if cs is None:
            cs = seed_contract_service(db, {"contractID": v["contractID"], "serviceID": v["serviceID"]}, {})
    if cs is None or v.get("unitChange") is None:
        raise ValueError(f"adjustment needs contractServiceID or contractID+serviceID, and unitChange: {v}")
    contract = db.tables["Contracts"].rows[cs["contractID"]]
    day = to_date(v.get("effectiveDate") or contract["startDate"])
    rid = v.pop("id", None)
    if rid is not None:
        db.bump_ids(rid)
    return db.apply_adjustment(cs, day, v, rid)


def _company_name(rng: random.Random, taken: set) -> str:
    for _ in range(50):
        name = f"{rng.choice(_ADJ)} {rng.choice(_NOUN)} {rng.choice(_TRADE)}"
        suffix = rng.choice(_SUFFIX)
        name = f"{name} {suffix}".strip()
        if name not in taken:
            taken.add(name)
            return name
    name = f"{name} {len(taken) + 1}"
    taken.add(name)
    return name


def _slug(name: str) -> str:
    words = re.sub(r"[^a-z0-9 ]", "", name.lower()).split()
    return "".join(w for w in words if w not in ("llc", "inc", "ltd", "co", "group"))[:40]


def generate(store: Store, spec: dict) -> dict:
    """POST /_sim/generate: deterministic companies, a recurring contract each, M365 services.

    spec: seed, companies (count), services (names or {name, unitPrice, unitCost} or
    omitted for the Microsoft 365 list), lines_per_contract (int or [min, max], default 0),
    database (ci of an existing database; else the first, created if none),
    credentials (for a new database), start_from (first contract month, default 2025-01-01).
    """
    rng = random.Random(spec.get("seed", 0))
    ci = spec.get("database")
    db = store.find(int(ci)) if ci is not None else store.find(None)
    if db is None:
        if ci is not None and store.databases:
            raise ValueError(f"no database with ci {ci}")
        db = store.add_database({"credentials": spec.get("credentials"), "zone": spec.get("zone"),
                                 **({"ci": ci} if ci is not None else {})})

    services = []
    for item in spec.get("services") or [{"name": n, "unitPrice": p, "description": d}
                                         for n, p, d in M365_SERVICES]:
        if isinstance(item, str):
            match = next((s for s in M365_SERVICES if s[0] == item), None)
            item = {"name": item, "unitPrice": match[1] if match else round(rng.uniform(2, 40), 2)}
        v = normalize(item, "Services", loose=True)
        v.setdefault("unitPrice", 10.0)
        if v.get("unitCost") is None:
            v["unitCost"] = round(v["unitPrice"] * 0.85, 2)  # typical CSP margin
        v.setdefault("periodType", 1)
        v.setdefault("invoiceDescription", v["name"])
        services.append(_insert_seed(db, "Services", v))

    lines = spec.get("lines_per_contract", 0)
    lo, hi = (lines, lines) if isinstance(lines, int) else (int(lines[0]), int(lines[1]))
    first = to_date(normalize({"startDate": spec.get("start_from") or "2025-01-01"}, "Contracts")["startDate"])
    taken = {r["companyName"] for r in db.tables["Companies"].rows.values()}
    counts = {"companies": 0, "contracts": 0, "services": len(services), "contract_services": 0}
    active_services = [s for s in services if s["isActive"]]
    for n in range(int(spec.get("companies", 0))):
        name = _company_name(rng, taken)
        company = _insert_seed(db, "Companies", {
            "companyName": name, "companyType": 1, "isActive": True,
            "webAddress": f"www.{_slug(name)}{rng.choice(_TLD)}",
            "phone": f"({rng.randint(201, 989)}) 555-{rng.randint(0, 9999):04d}",
            "createDate": fmt_date(first - dt.timedelta(days=rng.randint(30, 900)))})
        start = add_months(first, rng.randint(0, 11))
        if rng.random() < 0.2:
            start = start.replace(day=15)  # some contracts anchor mid-month
        contract = _insert_seed(db, "Contracts", {
            "companyID": company["id"], "contractName": f"{name} - Managed Cloud Services",
            "contractNumber": f"RS-{len(db.tables['Contracts'].rows) + 1:05d}",
            "contractType": 7, "status": 1, "startDate": fmt_date(start),
            "endDate": fmt_date(add_months(start, 36) - dt.timedelta(days=1))})
        counts["companies"] += 1
        counts["contracts"] += 1
        if rng.random() < 0.1:
            # a time & materials contract too, so "the one recurring contract" is not trivial
            _insert_seed(db, "Contracts", {
                "companyID": company["id"], "contractName": f"{name} - Time & Materials",
                "contractType": 1, "status": 1, "startDate": fmt_date(start),
                "endDate": fmt_date(add_months(start, 12) - dt.timedelta(days=1)),
                "contractPeriodType": "m", "billingPreference": 1})
            counts["contracts"] += 1
        for service in rng.sample(active_services, min(rng.randint(lo, hi), len(active_services))):
            cs = db.add_contract_service({
                "contractID": contract["id"], "serviceID": service["id"],
                "unitPrice": service["unitPrice"], "unitCost": service["unitCost"],
                "invoiceDescription": service["invoiceDescription"]}, created=start)
            db.apply_adjustment(cs, start, {"unitChange": rng.choice([1, 2, 3, 5, 5, 10, 10, 15, 25, 50])})
            counts["contract_services"] += 1
    return {"database": db.ci, "credentials": db.credentials, **counts}


def dump(db: Database, with_units: bool = False) -> dict:
    """GET /_sim/state: one database, every table in id order."""
    def rows(entity):
        t = db.tables[entity]
        return [dict(t.rows[i]) for i in t._order]
    out = {"ci": db.ci, "name": db.name, "zone": db.zone, "credentials": db.credentials,
           "companies": rows("Companies"), "contracts": rows("Contracts"), "services": rows("Services"),
           "contract_services": rows("ContractServices"),
           "adjustments": rows("ContractServiceAdjustments"), "charges": rows("ContractCharges")}
    if with_units:
        today = db.today()
        current = {}
        for cs in out["contract_services"]:
            current[str(cs["id"])] = db.ledgers[cs["id"]].units_at(today)
        out["units_today"] = current
    return out
