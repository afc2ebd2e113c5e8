"""ConnectWise records the mapping screens choose from, in the shape every PSA service returns:
{psa_id, name, active, company_id?, start_date?, billing_cycle?, unit_price?, unit_cost?}."""


def _money(value):
    return None if value is None else str(value)


def companies(client):
    return [{"psa_id": str(c.id), "name": c.name, "active": (c.status_name or "Active") == "Active",
             "identifier": c.identifier} for c in client.companies(active_only=False)]


def contracts(client):
    """Agreements; only Active, not cancelled ones can bill."""
    return [{"psa_id": str(a.id), "name": a.name, "company_id": str(a.company_id),
             "active": a.agreement_status == "Active" and not a.cancelled_flag,
             "start_date": a.start_date.isoformat() if a.start_date else None,
             "billing_cycle": a.billing_cycle_name} for a in client.agreements(active_only=False)]


def services(client):
    """Catalog products."""
    return [{"psa_id": str(i.id), "name": i.description or i.identifier, "identifier": i.identifier,
             "active": not i.inactive_flag, "unit_price": _money(i.price), "unit_cost": _money(i.cost)}
            for i in client.catalog(active_only=False)]


BROWSE = {"company": companies, "contract": contracts, "service": services}
