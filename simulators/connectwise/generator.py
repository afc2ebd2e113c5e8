"""Deterministic, realistic ConnectWise data: MSP customer companies, one active agreement each
(plus some cancelled/expired history), a Microsoft 365 catalog, and agreement additions.
Same arguments -> same data, byte for byte (random.Random(seed), fixed timestamps)."""
from __future__ import annotations

import random
from datetime import date, timedelta

from .state import Tenant

# (identifier, description, price, cost, inactive) - monthly per-seat NCE-style list prices.
M365_CATALOG = [
    ("CFQ7TTC0LH18", "Microsoft 365 Business Basic", 6.00, 5.10, False),
    ("CFQ7TTC0LDPB", "Microsoft 365 Business Standard", 12.50, 10.63, False),
    ("CFQ7TTC0LCHC", "Microsoft 365 Business Premium", 22.00, 18.70, False),
    ("CFQ7TTC0LFLX", "Microsoft 365 E3", 36.00, 30.60, False),
    ("CFQ7TTC0LFLZ", "Microsoft 365 E5", 57.00, 48.45, False),
    ("CFQ7TTC0LF8Q", "Office 365 E1", 10.00, 8.50, False),
    ("CFQ7TTC0LF8R", "Office 365 E3", 23.00, 19.55, False),
    ("CFQ7TTC0LH16", "Exchange Online (Plan 1)", 4.00, 3.40, False),
    ("CFQ7TTC0LH1P", "Exchange Online (Plan 2)", 8.00, 6.80, False),
    ("CFQ7TTC0LHSF", "Microsoft 365 Apps for business", 8.25, 7.01, False),
    ("CFQ7TTC0LHRM", "Microsoft Teams Essentials", 4.00, 3.40, False),
    ("CFQ7TTC0LCHG", "Microsoft Defender for Business", 3.00, 2.55, False),
    ("CFQ7TTC0LHPM", "Microsoft Entra ID P1", 6.00, 5.10, False),
    ("CFQ7TTC0LHWP", "Visio Plan 2", 15.00, 12.75, False),
    ("CFQ7TTC0HCW2", "Project Plan 3", 30.00, 25.50, False),
    ("CFQ7TTC0LHSV", "Power BI Pro", 14.00, 11.90, False),
    ("CFQ7TTC0MM8R", "Microsoft 365 Copilot", 30.00, 25.50, False),
    ("DZH318Z0BQ3Q", "Azure plan", 0.00, 0.00, False),
    ("MS-O365-E1-LEGACY", "Office 365 E1 (legacy licensing)", 8.00, 6.80, True),
]

_FIRST = ["Acme", "Bluewater", "Cedar", "Summit", "Harbor", "Pinecrest", "Riverside", "Northwind",
          "Granite", "Lakeside", "Redwood", "Silverline", "Brightpath", "Ironwood", "Meadow",
          "Oakridge", "Sterling", "Westfield", "Clearview", "Evergreen", "Foxglove", "Highland"]
_SECOND = ["Dental", "Legal", "Logistics", "Accounting", "Realty", "Clinic", "Manufacturing",
           "Architects", "Insurance", "Engineering", "Veterinary", "Marketing", "Construction",
           "Consulting", "Pharmacy", "Foods", "Motors", "Design", "Freight", "Labs"]
_SUFFIX = ["LLC", "Inc", "Group", "Partners", "Co", "Ltd"]
STAMP = "2025-01-01T00:00:00Z"


def _iso(d):
    return d.isoformat() + "T00:00:00Z"


def generate(store, seed=0, companies=500, company_id="demo", name=None, credentials=None,
             additions=None, **unknown):
    """Build (replace) tenant `company_id`. additions=None -> 1..6 lines per active agreement;
    an int -> exactly that many additions spread evenly over the active agreements."""
    if unknown:
        raise ValueError(f"unknown generate options: {sorted(unknown)}")
    if not isinstance(companies, int) or companies < 1:
        raise ValueError("companies must be a positive integer")
    rng = random.Random(seed)
    creds = [{"public_key": c.get("public_key", "public"), "private_key": c.get("private_key", "private"),
              "client_id": c.get("client_id"), "read_only": bool(c.get("read_only", False))}
             for c in (credentials or [{}])]
    tenant = Tenant(company_id, name or f"{company_id} MSP", creds)

    products = []
    for ident, desc, price, cost, inactive in M365_CATALOG:
        products.append(tenant.create("catalog", {
            "identifier": ident, "description": desc, "inactiveFlag": inactive, "price": price,
            "cost": cost, "productClass": "NonInventory", "recurringFlag": True,
            "recurringRevenue": price, "recurringCost": cost}, strict=False, now=STAMP))
    seat_products = [p for p in products if not p["inactiveFlag"] and p["price"] > 0]

    active = []
    for n in range(companies):
        first, second = rng.choice(_FIRST), rng.choice(_SECOND)
        comp = tenant.create("company", {
            "identifier": f"{first}{second}{n + 1}",
            "name": f"{first} {second} {rng.choice(_SUFFIX)}",
            "website": f"www.{first.lower()}{second.lower()}{n + 1}.com",
        }, strict=False, now=STAMP)
        ref = {"id": comp["id"]}
        start = date(2022, 1, 1) + timedelta(days=rng.randrange(0, 3 * 365))
        if n % 7 == 3:  # some customers moved from an older, cancelled agreement
            tenant.create("agreement", {
                "name": f"{comp['name']} - Managed Services (old)", "company": ref,
                "type": {"id": 1}, "startDate": _iso(start - timedelta(days=730)),
                "endDate": _iso(start - timedelta(days=1)), "agreementStatus": "Cancelled",
                "billAmount": 0}, strict=False, now=STAMP)
        if n % 11 == 5:
            tenant.create("agreement", {
                "name": f"{comp['name']} - Block Time 2021", "company": ref, "type": {"id": 3},
                "startDate": "2021-01-01T00:00:00Z", "endDate": "2021-12-31T00:00:00Z",
                "agreementStatus": "Expired", "billAmount": 1500}, strict=False, now=STAMP)
        active.append(tenant.create("agreement", {
            "name": f"{comp['name']} - Microsoft 365", "company": ref, "type": {"id": 2},
            "startDate": _iso(start), "noEndingDateFlag": True, "billingCycle": {"id": 1},
            "agreementStatus": "Active", "prorateFlag": True,
            "billAmount": float(rng.choice([0, 99, 250, 500, 1200]))}, strict=False, now=STAMP))

    if additions is None:
        per_agreement = [rng.randint(1, 6) for _ in active]
    else:
        if not isinstance(additions, int) or additions < 0:
            raise ValueError("additions must be a non-negative integer")
        base, extra = divmod(additions, len(active))
        per_agreement = [base + (1 if i < extra else 0) for i in range(len(active))]
    for agr, count in zip(active, per_agreement):
        start = date.fromisoformat(agr["startDate"][:10])
        for _ in range(count):
            prod = rng.choice(seat_products)
            eff = start + timedelta(days=rng.randrange(0, 700))
            body = {"product": {"id": prod["id"]},
                    "quantity": rng.choice([1, 2, 3, 5, 8, 10, 12, 15, 20, 25, 40, 60, 120]),
                    "unitPrice": prod["price"], "unitCost": prod["cost"],
                    "billCustomer": "Billable" if rng.random() < 0.93 else "DoNotBill",
                    "effectiveDate": _iso(eff),
                    "invoiceDescription": prod["description"],
                    "description": prod["description"]}
            if rng.random() < 0.08:  # cancelled lines stay on the agreement, readable
                body["cancelledDate"] = _iso(eff + timedelta(days=rng.randrange(30, 365)))
            tenant.create("addition", body, agreement_id=agr["id"], strict=False, now=STAMP)
    return store.add_tenant(tenant)
