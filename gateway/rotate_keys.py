"""Re-encrypt every stored vendor credential under the newest Fernet key.

Rotation: put a new key in front of IDSYNC_FERNET_KEYS (new,old), restart the services, run
`python -m gateway.rotate_keys`, then drop the old key. Until then both keys decrypt.
"""
from sqlalchemy import select, update

from common.config import load_config
from common.db import Store, make_engine
from common.secrets import ROOT
from common.vault import Vault
from gateway.models import credentials


def rotate_all(store, vault, tenant_ids=None):
    """All credentials (or those of some tenants) in one transaction: all rotate, or none."""
    rotated = 0
    query = select(credentials.c.tenant_id, credentials.c.kind, credentials.c.ciphertext).with_for_update()
    if tenant_ids is not None:
        query = query.where(credentials.c.tenant_id.in_(list(tenant_ids)))
    with store.transaction() as session:
        rows = session.execute(query).all()
        for row in rows:
            session.execute(update(credentials)
                            .where(credentials.c.tenant_id == row.tenant_id, credentials.c.kind == row.kind)
                            .values(ciphertext=vault.rotate(row.ciphertext)))
            rotated += 1
    return rotated


def main():
    config = load_config(ROOT / "gateway" / "config.yml")
    engine = make_engine(config["DB_URI"], config["DB_SCHEMA"], pool_size=1)
    print(f"re-encrypted {rotate_all(Store(engine), Vault.from_config(config))} credential(s) under the newest key")


if __name__ == "__main__":
    main()
