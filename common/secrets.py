"""Local secrets for `make up` and `make test`: generated once into .run/secrets.env.

Production passes the same variables from Kubernetes Secrets; nothing here is committed.
"""
import os
import pathlib
import secrets as _secrets

from cryptography.fernet import Fernet

from common.topology import SERVICES, role_for

ROOT = pathlib.Path(__file__).resolve().parent.parent
SECRETS_FILE = ROOT / ".run" / "secrets.env"


def _generate():
    values = {"IDSYNC_DB_OWNER_PASSWORD": _secrets.token_urlsafe(24),
              "IDSYNC_AMQP_PASSWORD": _secrets.token_urlsafe(24),
              "IDSYNC_FERNET_KEYS": Fernet.generate_key().decode(),
              "IDSYNC_SESSION_SECRET": _secrets.token_urlsafe(32),
              "IDSYNC_DEMO_PASSWORD": "demo-" + _secrets.token_urlsafe(9)}
    for service in SERVICES:
        values[f"IDSYNC_DB_PASSWORD_{service.upper()}"] = _secrets.token_urlsafe(24)
    return values


def ensure_secrets():
    """Create the file if missing (mode 600) and load it into os.environ (existing env wins)."""
    SECRETS_FILE.parent.mkdir(parents=True, exist_ok=True)
    values = {}
    if SECRETS_FILE.exists():
        for line in SECRETS_FILE.read_text().splitlines():
            if "=" in line and not line.startswith("#"):
                k, v = line.split("=", 1)
                values[k] = v
    missing = {k: v for k, v in _generate().items() if k not in values}
    if missing:  # a newer checkout may need a secret an older .run/ lacks: add it, keep the rest
        fd = os.open(SECRETS_FILE, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "a") as fh:
            fh.write("".join(f"{k}={v}\n" for k, v in missing.items()))
        values.update(missing)
    for k, v in values.items():
        os.environ.setdefault(k, v)
    return values


def db_password(service):
    return os.environ[f"IDSYNC_DB_PASSWORD_{service.upper()}"]


__all__ = ["ensure_secrets", "db_password", "role_for"]

if __name__ == "__main__":
    ensure_secrets()
    print(SECRETS_FILE)
