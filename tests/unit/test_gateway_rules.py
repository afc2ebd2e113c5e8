import logging

import pytest
from cryptography.fernet import Fernet
from marshmallow import ValidationError

from common.logs import JsonLineFormatter, redact
from gateway import auth, openapi, schemas
from gateway.errors import NotFound, to_api_error
from common.vault import Vault, VaultError, summary


def test_vault_round_trip_and_rotation():
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    token = Vault([old]).encrypt({"secret": "hunter2-long-secret"})
    assert "hunter2" not in token
    rotated_vault = Vault([new, old])
    assert rotated_vault.decrypt(token) == {"secret": "hunter2-long-secret"}
    rotated = rotated_vault.rotate(token)
    assert Vault([new]).decrypt(rotated) == {"secret": "hunter2-long-secret"}
    with pytest.raises(VaultError):
        Vault([new]).decrypt(token)


def test_summary_masks_secrets_and_keeps_plain_fields():
    s = summary("autotask", {"api_user": "api@x.example", "secret": "abcdefghijkl1234", "integration_code": "CODE12345678"})
    assert s == {"api_user": "api@x.example", "secret": "****1234", "integration_code": "****5678"}


def test_argon2_hashes_and_verifies():
    h = auth.hash_password("correct horse battery")
    assert h.startswith("$argon2id$")
    assert auth.check_password(h, "correct horse battery")
    assert not auth.check_password(h, "wrong")


def test_roles_and_capabilities():
    viewer = auth.Principal("u", "t", "viewer", "token")
    viewer.require("read")
    with pytest.raises(Exception) as err:
        viewer.require("billing")
    assert to_api_error(err.value)[0] == 403


def test_error_table():
    assert to_api_error(NotFound("no such user")) == (404, {"error": "not_found", "message": "no such user"})
    status, body = to_api_error(ValidationError({"email": ["Not a valid email address."]}))
    assert status == 400 and body["details"] == {"email": ["Not a valid email address."]}
    status, body = to_api_error(RuntimeError("db password is xyz"))
    assert status == 500 and "xyz" not in body["message"]


def test_strict_schemas_refuse_unknown_fields():
    with pytest.raises(ValidationError) as err:
        schemas.UserIn().load({"email": "a@b.example", "name": "A", "role": "admin", "password": "x" * 12, "admn": 1})
    assert "admn" in err.value.messages


def test_credential_schema_requires_vendor_fields():
    with pytest.raises(ValidationError) as err:
        schemas.credential_schema("connectwise").load({"company_id": "x"})
    assert {"public_key", "private_key", "client_id"} <= set(err.value.messages)


def test_logs_redact_secrets_and_carry_ids():
    assert redact('password="abc123" Authorization: Bearer xyz') .count("***") == 2
    record = logging.LogRecord("x", logging.INFO, __file__, 1, "login with secret=%s", ("topsecret",), None)
    record.tenant_id, record.event_id = "t-9", "e-9"
    line = JsonLineFormatter("gateway").format(record)
    assert "topsecret" not in line and '"tenant_id": "t-9"' in line and '"event_id": "e-9"' in line


def test_openapi_document_lists_the_api():
    doc = openapi.build()
    assert doc["openapi"] == "3.0.3"
    assert "/api/v1/users/{user_id}" in doc["paths"]
    assert doc["paths"]["/api/v1/users"]["post"]["requestBody"]


HUB_DURING_SIGN_INS = """
import eventlet; eventlet.monkey_patch()
from gateway import auth
stored = auth.hash_password("a-long-enough-password")
ticks = [0]
def ticker():
    while True:
        eventlet.sleep(0.002)
        ticks[0] += 1
eventlet.spawn(ticker)
eventlet.sleep(0)
for _ in range(5):
    assert auth.check_password(stored, "a-long-enough-password")
assert not auth.check_password(stored, "wrong")
print(ticks[0])
"""


def test_password_checks_leave_the_gateway_hub_serving():
    """In the green gateway argon2 runs off the eventlet hub: other greenlets (requests) run while
    passwords are checked. On the hub itself the loop above never yields and the ticker counts 0."""
    import subprocess
    import sys

    out = subprocess.run([sys.executable, "-W", "ignore", "-c", HUB_DURING_SIGN_INS], capture_output=True,
                         text=True, timeout=120, check=True).stdout
    assert int(out.split()[-1]) > 10
