"""Fernet key rotation: with a new key in front, old credentials still decrypt; after rotate_all
they decrypt with the new key alone."""
import uuid

from cryptography.fernet import Fernet
from sqlalchemy import select

from common.db import Store
from common.vault import Vault, VaultError
from gateway import directory
from gateway.models import credentials
from gateway.rotate_keys import rotate_all


def test_rotation_reencrypts_every_credential(env, engines):
    store = Store(engines("gateway"))
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    secret = f"s-{uuid.uuid4().hex}"
    with store.transaction() as session:
        tid = directory.create_tenant(session, "Rotation MSP", "autotask")
        directory.store_credentials(session, Vault([old]), tid, "autotask",
                                    {"api_user": "u@x.example", "secret": secret, "integration_code": "CODE"})
    both = Vault([new, old])
    assert rotate_all(store, both, tenant_ids=[tid]) == 1
    with store.transaction() as session:
        token = session.execute(select(credentials.c.ciphertext).where(credentials.c.tenant_id == tid)).scalar_one()
    assert Vault([new]).decrypt(token)["secret"] == secret
    try:
        Vault([old]).decrypt(token)
        raise AssertionError("the old key alone must no longer open it")
    except VaultError:
        pass
