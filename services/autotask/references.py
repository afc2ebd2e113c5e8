"""Autotask records the mapping screens choose from, in the shape every PSA service returns:
{psa_id, name, active, company_id?, start_date?, billing_cycle?, unit_price?, unit_cost?}."""
from services.autotask.client import CONTRACT_ACTIVE, RECURRING_SERVICE


def _money(value):
    return None if value is None else str(value)


def companies(client):
    return [{"psa_id": str(c["id"]), "name": c["companyName"], "active": bool(c["isActive"]),
             "web_address": c.get("webAddress")} for c in client.companies(active_only=False)]


def contracts(client):
    """Recurring Service contracts (type 7) are the ones that bill seats; only status 1 is active."""
    return [{"psa_id": str(c["id"]), "name": c["contractName"], "company_id": str(c["companyID"]),
             "active": c["status"] == CONTRACT_ACTIVE,
             "start_date": c["startDate"].isoformat() if c.get("startDate") else None,
             "billing_cycle": "monthly" if str(c.get("contractPeriodType") or "m").lower() in ("m", "1") else
             str(c.get("contractPeriodType"))}
            for c in client.contracts(recurring_only=False) if c["contractType"] == RECURRING_SERVICE]


def services(client):
    return [{"psa_id": str(s["id"]), "name": s["name"], "active": bool(s["isActive"]),
             "unit_price": _money(s.get("unitPrice")), "unit_cost": _money(s.get("unitCost"))}
            for s in client.services(active_only=False)]


BROWSE = {"company": companies, "contract": contracts, "service": services}
