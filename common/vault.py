"""Vendor credentials encrypted at rest with Fernet; MultiFernet so keys can rotate.

Keys come from the environment (FERNET_KEYS, newest first). Decrypting works with any listed
key; encrypting always uses the first. `rotate` re-encrypts a token under the newest key.
The services that call a vendor receive the ciphertext and decrypt it themselves, so a
credential never crosses the broker in clear.
"""
import json

from cryptography.fernet import Fernet, InvalidToken, MultiFernet

# fields of each credential kind; the secret ones are never shown back
CREDENTIAL_FIELDS = {
    "marketplace": {"fields": ["base_url", "region", "api_user", "password", "subscription_key", "marketplace"],
                    "secret": ["password", "subscription_key"]},
    "autotask": {"fields": ["zone_url", "api_user", "secret", "integration_code"],
                 "secret": ["secret", "integration_code"]},
    "connectwise": {"fields": ["site", "base_url", "company_id", "public_key", "private_key", "client_id"],
                    "secret": ["private_key", "client_id"]},
}


class VaultError(Exception):
    pass


def parse_keys(value):
    keys = [k.strip() for k in (value or "").split(",") if k.strip()]
    if not keys:
        raise VaultError("no Fernet key configured (FERNET_KEYS / IDSYNC_FERNET_KEYS)")
    return keys


class Vault:
    def __init__(self, keys):
        self._fernet = MultiFernet([Fernet(k.encode() if isinstance(k, str) else k) for k in keys])

    @classmethod
    def from_config(cls, config):
        return cls(parse_keys(config.get("FERNET_KEYS")))

    def encrypt(self, document: dict) -> str:
        return self._fernet.encrypt(json.dumps(document, sort_keys=True).encode()).decode()

    def decrypt(self, token: str) -> dict:
        try:
            return json.loads(self._fernet.decrypt(token.encode()))
        except InvalidToken:
            raise VaultError("credential cannot be decrypted with the configured keys") from None

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode()).decode()
        except InvalidToken:
            raise VaultError("credential cannot be decrypted with any configured key; rotation stopped") from None


def mask(value):
    value = str(value or "")
    return "****" + value[-4:] if len(value) > 8 else "****"


def summary(kind, document):
    """What may be shown back: plain non-secret fields, masked secrets."""
    spec = CREDENTIAL_FIELDS[kind]
    return {f: (mask(document.get(f)) if f in spec["secret"] else document.get(f))
            for f in spec["fields"] if document.get(f) is not None}
