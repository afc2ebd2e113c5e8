"""Seed the demo: two MSP tenants wired to the local vendor simulators. Idempotent.

- Northwind IT Services: Ingram Marketplace + Autotask (the default demo)
- Contoso Managed Services: Ingram Marketplace + ConnectWise
Logins are printed at the end; the password comes from IDSYNC_DEMO_PASSWORD (.run/secrets.env).
"""
import os
import uuid

from sqlalchemy import select

from common.config import load_config
from common.db import make_engine
from common.secrets import ROOT, ensure_secrets
from common.topology import http_port
from gateway import directory
from gateway.models import users
from common.vault import Vault

NAMESPACE = uuid.UUID("5b0b7a40-4d1e-4c59-9a39-3c1f1f0de001")


def tenant_id(slug):
    return str(uuid.uuid5(NAMESPACE, slug))


def demo_tenants():
    mp = f"http://127.0.0.1:{http_port('sim-marketplace')}"
    at = f"http://127.0.0.1:{http_port('sim-autotask')}"
    cw = f"http://127.0.0.1:{http_port('sim-connectwise')}"
    return [
        {"slug": "northwind", "name": "Northwind IT Services", "psa": "autotask",
         "users": [("admin@northwind.example", "Nora Admin", "admin"),
                   ("billing@northwind.example", "Bill Ing", "billing"),
                   ("viewer@northwind.example", "Vic Viewer", "viewer")],
         "credentials": {
             "marketplace": {"base_url": f"{mp}/marketplace/na/", "region": "na", "api_user": "northwind-api",
                             "password": "northwind-mp-password", "subscription_key": "northwind-sub-key",
                             "marketplace": "us"},
             "autotask": {"zone_url": f"{at}/atservicesrest/v1.0/", "api_user": "api@northwind.example",
                          "secret": "northwind-at-secret", "integration_code": "NORTHWINDINTEGRATION"}}},
        {"slug": "contoso", "name": "Contoso Managed Services", "psa": "connectwise",
         "users": [("admin@contoso.example", "Cora Admin", "admin")],
         "credentials": {
             "marketplace": {"base_url": f"{mp}/marketplace/na/", "region": "na", "api_user": "contoso-api",
                             "password": "contoso-mp-password", "subscription_key": "contoso-sub-key",
                             "marketplace": "us"},
             "connectwise": {"site": f"127.0.0.1:{http_port('sim-connectwise')}", "base_url": f"{cw}/v4_6_release/apis/3.0/",
                             "company_id": "contoso", "public_key": "contosopublic", "private_key": "contoso-private-key",
                             "client_id": "11111111-2222-3333-4444-555555555555"}}},
    ]


def seed_gateway(engine, vault, password):
    from common.db import Store

    store = Store(engine)
    with store.transaction() as session:
        for t in demo_tenants():
            tid = directory.create_tenant(session, t["name"], t["psa"], tenant_id=tenant_id(t["slug"]))
            for email, name, role in t["users"]:
                if not session.execute(select(users.c.id).where(users.c.email == email)).first():
                    directory.create_user(session, tid, email, name, role, password)
            for kind, document in t["credentials"].items():
                directory.store_credentials(session, vault, tid, kind, document)


def main():
    ensure_secrets()
    config = load_config(ROOT / "gateway" / "config.yml")
    engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=1)
    seed_gateway(engine, Vault.from_config(config), os.environ["IDSYNC_DEMO_PASSWORD"])
    from gateway import seed_simulators

    seed_simulators.seed(demo_tenants())
    print(f"\nPortal: http://127.0.0.1:{http_port('gateway')}/")
    print(f"Demo login (Autotask tenant):    admin@northwind.example / {os.environ['IDSYNC_DEMO_PASSWORD']}")
    print(f"Demo login (ConnectWise tenant): admin@contoso.example / {os.environ['IDSYNC_DEMO_PASSWORD']}")


if __name__ == "__main__":
    main()
