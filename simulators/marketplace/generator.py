"""Deterministic, realistic marketplace data: Microsoft 365 catalogue, MSP customers,
subscriptions with 1-3 lines. Same seed + same arguments + same starting ids -> same
document (it uses only random.Random(seed) and a fixed anchor date, never the clock).

generate() returns a seed document in the shape POST /_sim/seed takes, with every field
filled in, so loading it goes through the same code path as a hand-written seed. The customers
belong to `account`, and so do the credentials given that name no account of their own.
"""
from __future__ import annotations

import datetime as dt
import random
import re
from decimal import Decimal

from .state import DEFAULT_ACCOUNT, ID_BASE, iso, next_renewal, parse_dt

DEFAULT_ANCHOR = "2026-11-01T00:00:00Z"

# (Microsoft product id, name, monthly list price per seat on an annual term, popularity,
#  max seats, has a monthly-term offer)
CATALOGUE = [
    ("CFQ7TTC0LH18", "Microsoft 365 Business Basic", "6.00", 18, 300, True),
    ("CFQ7TTC0LDPB", "Microsoft 365 Business Standard", "12.50", 16, 300, True),
    ("CFQ7TTC0LCHC", "Microsoft 365 Business Premium", "22.00", 20, 300, True),
    ("CFQ7TTC0LH1G", "Microsoft 365 Apps for business", "8.25", 6, 300, True),
    ("CFQ7TTC0LGZQ", "Microsoft 365 Apps for enterprise", "12.00", 3, 10000, True),
    ("CFQ7TTC0LFLX", "Microsoft 365 E3", "36.00", 5, 10000, True),
    ("CFQ7TTC0LFLZ", "Microsoft 365 E5", "57.00", 2, 10000, True),
    ("CFQ7TTC0LGTX", "Microsoft 365 F3", "8.00", 3, 10000, True),
    ("CFQ7TTC0LF8Q", "Office 365 E1", "10.00", 3, 10000, True),
    ("CFQ7TTC0LF8R", "Office 365 E3", "23.00", 4, 10000, True),
    ("CFQ7TTC0LF8S", "Office 365 E5", "38.00", 1, 10000, True),
    ("CFQ7TTC0LH16", "Exchange Online (Plan 1)", "4.00", 10, 10000, True),
    ("CFQ7TTC0LH0R", "Exchange Online (Plan 2)", "8.00", 2, 10000, True),
    ("CFQ7TTC0LH0Z", "Exchange Online Protection", "1.00", 2, 10000, True),
    ("CFQ7TTC0RQ9M", "Microsoft Teams Essentials", "4.00", 4, 300, True),
    ("CFQ7TTC0LCHJ", "Microsoft Defender for Business", "3.00", 5, 300, True),
    ("CFQ7TTC0HD33", "Visio Plan 2", "15.00", 2, 10000, True),
    ("CFQ7TTC0HDN1", "Project Plan 3", "30.00", 1, 10000, True),
    ("CFQ7TTC0L3PB", "Power BI Pro", "14.00", 3, 10000, True),
    ("CFQ7TTC0LFLS", "Microsoft Entra ID P1", "6.00", 2, 10000, True),
    ("CFQ7TTC0LCHL", "Microsoft Intune Plan 1", "8.00", 2, 10000, True),
    ("CFQ7TTC0MM8R", "Microsoft 365 Copilot", "30.00", 2, 10000, False),
]

# (MPN suffix, subscription period, billing period, price factor vs annual list, weight)
TERMS = [
    ("P1Y:M", {"type": "year", "duration": 1}, {"type": "month", "duration": 1}, Decimal("1"), 60),
    ("P1M:M", {"type": "month", "duration": 1}, {"type": "month", "duration": 1}, Decimal("1.2"), 30),
    ("P1Y:A", {"type": "year", "duration": 1}, {"type": "year", "duration": 1}, Decimal("12"), 10),
]
EUR_RATE = Decimal("0.92")

PREFIXES = ["Northwind", "Contoso", "Fabrikam", "Blue Ridge", "Summit", "Harbor", "Cedar", "Pinnacle",
            "Evergreen", "Redwood", "Lakeside", "Granite", "Silver Creek", "Ironwood", "Maple", "Oakridge",
            "Riverbend", "Sunrise", "Keystone", "Coastal", "Prairie", "Falcon", "Atlas", "Beacon",
            "Crescent", "Highland", "Liberty", "Meridian", "Orchard", "Sterling", "Westfield",
            "Brightwater", "Copper", "Horizon", "Juniper", "Magnolia", "Patriot", "Quarry", "Sequoia",
            "Tidewater"]
TRADES = ["Dental", "Legal", "Accounting", "Logistics", "Manufacturing", "Realty", "Insurance",
          "Medical Group", "Construction", "Engineering", "Veterinary", "Consulting", "Architects",
          "Pharmacy", "Auto Group", "Hospitality", "Marketing", "Financial", "Plumbing", "Electric",
          "Landscaping", "Foods", "Brewing", "Design", "Labs", "Academy", "Clinic", "Partners",
          "Holdings", "Transport"]
SUFFIXES = ["LLC", "Inc.", "Ltd", "Co.", "Group", "PC", "LLP", ""]
CITIES = ["Austin", "Denver", "Boise", "Tampa", "Omaha", "Reno", "Tulsa", "Raleigh", "Madison", "Fresno",
          "Spokane", "Dayton", "Savannah", "Eugene", "Albany", "Duluth"]
TLDS = [".com"] * 6 + [".net", ".co", ".us", ".org"]
STATUS_WEIGHTS = [("active", 88), ("hold", 5), ("terminated", 5), ("pending", 2)]


def catalogue_products() -> list[dict]:
    products = []
    for ms_id, name, list_price, _pop, max_qty, has_monthly in CATALOGUE:
        for n, (suffix, sub_period, bill_period, factor, _w) in enumerate(TERMS, start=1):
            if suffix.startswith("P1M") and not has_monthly:
                continue
            price = (Decimal(list_price) * factor).quantize(Decimal("0.01"))
            cost = (price * Decimal("0.85")).quantize(Decimal("0.01"))  # typical distributor margin
            products.append({
                "mpn": f"{ms_id}:{n:04d}:{suffix}", "vendor": "Microsoft", "name": name,
                "serviceName": "Microsoft 365 NCE", "minimumQuantity": 1, "maximumQuantity": max_qty,
                "unitPrice": str(price), "unitCost": str(cost),
                "prices": [{"currency": "USD", "amount": str(price)},
                           {"currency": "EUR", "amount": str((price * EUR_RATE).quantize(Decimal("0.01")))}],
                "costs": [{"currency": "USD", "amount": str(cost)},
                          {"currency": "EUR", "amount": str((cost * EUR_RATE).quantize(Decimal("0.01")))}],
                "billingPeriod": dict(bill_period), "subscriptionPeriod": dict(sub_period),
                "billingModel": "prepaid",
            })
    return products


def _customers(rng: random.Random, count: int, first_id: int, account: str) -> list[dict]:
    out, names, domains = [], set(), set()
    for i in range(count):
        while True:
            prefix, trade = rng.choice(PREFIXES), rng.choice(TRADES)
            base = f"{prefix} {trade}"
            if base in names:  # many customers: make the name unique with a city
                base = f"{base} of {rng.choice(CITIES)}"
            if base not in names:
                break
        names.add(base)
        suffix = rng.choice(SUFFIXES)
        slug = re.sub(r"[^a-z0-9]", "", base.lower().replace(" of ", ""))
        domain = slug + rng.choice(TLDS)
        k = 2
        while domain in domains:
            domain, k = f"{slug}{k}{rng.choice(TLDS)}", k + 1
        domains.add(domain)
        out.append({"id": str(first_id + i), "externalId": f"C{first_id + i - ID_BASE['customer'] + 1:05d}",
                    "name": f"{base} {suffix}".strip(), "domain": domain,
                    "status": "inactive" if rng.random() < 0.02 else "active", "account": account})
    return out


def _quantity(rng: random.Random, max_qty: int) -> int:
    # Small businesses dominate: median ~8 seats, long tail.
    return max(1, min(max_qty, int(rng.lognormvariate(2.0, 1.0))))


def generate(seed: int = 1, customers: int = 50, lines: int = 200, anchor: str = DEFAULT_ANCHOR,
             first_ids: dict | None = None, credentials=None, account: str = DEFAULT_ACCOUNT) -> dict:
    rng = random.Random(seed)
    ids = {**ID_BASE, **(first_ids or {})}
    anchor_dt = parse_dt(anchor)
    products = catalogue_products()
    by_term: dict[str, list[tuple[dict, int]]] = {}
    popularity = {name: pop for _id, name, _p, pop, _m, _h in CATALOGUE}
    for p in products:
        by_term.setdefault(p["mpn"].split(":", 2)[2], []).append((p, popularity[p["name"]]))

    custs = _customers(rng, max(1, customers), ids["customer"], account)
    # Skewed ownership: a few customers hold many subscriptions.
    cust_weights = [1.0 / (rank + 1) ** 0.7 for rank in range(len(custs))]
    rng.shuffle(cust_weights)
    term_names = [t[0] for t in TERMS]
    term_weights = [t[4] for t in TERMS]
    statuses = [s for s, _ in STATUS_WEIGHTS]
    status_weights = [w for _, w in STATUS_WEIGHTS]
    span = 3 * 365 * 86400

    raw = []
    remaining = max(0, lines)
    while remaining > 0:
        n = min(remaining, rng.choices([1, 2, 3], weights=[50, 30, 20])[0])
        remaining -= n
        term = rng.choices(term_names, weights=term_weights)[0]
        offers = by_term[term]
        picked: list[dict] = []
        while len(picked) < n:
            product = rng.choices([o[0] for o in offers], weights=[o[1] for o in offers])[0]
            if product not in picked:
                picked.append(product)
        status = rng.choices(statuses, weights=status_weights)[0]
        age = rng.randint(0, 7 * 86400) if status == "pending" else rng.randint(0, span)
        created = anchor_dt - dt.timedelta(seconds=age)
        raw.append((created, rng.choices(range(len(custs)), weights=cust_weights)[0], status, picked,
                    [_quantity(rng, p["maximumQuantity"]) for p in picked],
                    [rng.random() < 0.1 for _ in picked], rng.random(), rng.random()))

    raw.sort(key=lambda r: r[0])  # ids grow with creation time, as in a real system
    subs = []
    for i, (created, cust_ix, status, picked, qtys, discounts, r_mod, r_when) in enumerate(raw):
        modified = created
        if r_mod < 0.5 or status in ("terminated", "hold"):
            modified = created + (anchor_dt - created) * r_when
        sub_lines = []
        for product, qty, discount in zip(picked, qtys, discounts):
            price = Decimal(product["unitPrice"])
            if discount:  # promotional price on some lines
                price = (price * Decimal("0.9")).quantize(Decimal("0.01"))
            sub_lines.append({"mpn": product["mpn"], "name": product["name"], "quantity": qty,
                              "unitPrice": str(price)})
        subs.append({
            "id": str(ids["subscription"] + i), "customerId": custs[cust_ix]["id"], "status": status,
            "renewalStatus": "off" if status == "terminated" else "on",
            "creationDate": iso(created),
            "renewalDate": iso(next_renewal(created, picked[0]["subscriptionPeriod"], anchor_dt)),
            "lastModifiedDate": iso(modified), "lines": sub_lines,
        })

    doc = {"customers": custs, "products": products, "subscriptions": subs}
    if credentials:
        creds = credentials if isinstance(credentials, list) else [credentials]
        doc["credentials"] = [{**c, "account": c.get("account") or account} if isinstance(c, dict) else c
                              for c in creds]
    return doc
