"""Tenants, users and credentials, always read and written inside the caller's tenant.

Every function takes the tenant_id of the principal and puts it in the WHERE clause: another
tenant's object is indistinguishable from a missing one (404), so ids cannot be probed.
"""
import uuid

from sqlalchemy import select
from sqlalchemy.dialects.postgresql import insert

from gateway.auth import hash_password
from gateway.errors import Conflict, NotFound
from gateway.models import credentials, tenants, users
from common.vault import summary

USER_COLUMNS = (users.c.id, users.c.email, users.c.name, users.c.role, users.c.active, users.c.created_at)


def get_tenant(session, tenant_id):
    row = session.execute(select(tenants).where(tenants.c.id == tenant_id)).first()
    if row is None:
        raise NotFound("no such tenant")
    return dict(row._mapping)


def list_users(session, tenant_id):
    rows = session.execute(select(*USER_COLUMNS).where(users.c.tenant_id == tenant_id).order_by(users.c.email))
    return [dict(r._mapping) for r in rows]


def get_user(session, tenant_id, user_id):
    row = session.execute(select(*USER_COLUMNS).where(users.c.tenant_id == tenant_id, users.c.id == user_id)).first()
    if row is None:
        raise NotFound("no such user")
    return dict(row._mapping)


def create_user(session, tenant_id, email, name, role, password):
    email = email.strip().lower()
    if session.execute(select(users.c.id).where(users.c.email == email)).first():
        raise Conflict("a user with this e-mail exists")
    user_id = str(uuid.uuid4())
    session.execute(users.insert().values(id=user_id, tenant_id=tenant_id, email=email, name=name, role=role,
                                          password_hash=hash_password(password)))
    return get_user(session, tenant_id, user_id)


def create_tenant(session, name, psa, settings=None, tenant_id=None):
    tenant_id = tenant_id or str(uuid.uuid4())
    session.execute(insert(tenants).values(id=tenant_id, name=name, psa=psa, settings=settings or {})
                    .on_conflict_do_update(index_elements=["id"], set_={"name": name, "psa": psa}))
    return tenant_id


def store_credentials(session, vault, tenant_id, kind, document):
    values = {"ciphertext": vault.encrypt(document), "summary": summary(kind, document)}
    session.execute(insert(credentials).values(tenant_id=tenant_id, kind=kind, **values)
                    .on_conflict_do_update(index_elements=["tenant_id", "kind"], set_=values))


def list_credentials(session, tenant_id):
    rows = session.execute(select(credentials.c.kind, credentials.c.summary, credentials.c.updated_at)
                           .where(credentials.c.tenant_id == tenant_id).order_by(credentials.c.kind))
    return [dict(r._mapping) for r in rows]


def credential_ciphertext(session, tenant_id, kind):
    row = session.execute(select(credentials.c.ciphertext)
                          .where(credentials.c.tenant_id == tenant_id, credentials.c.kind == kind)).first()
    if row is None:
        raise NotFound(f"no {kind} credentials for this tenant")
    return row.ciphertext


def tenants_with_credentials(session, kind):
    rows = session.execute(select(credentials.c.tenant_id).where(credentials.c.kind == kind)
                           .order_by(credentials.c.tenant_id))
    return [r.tenant_id for r in rows]
