"""The gateway over HTTP: sign-in, tokens, roles, tenant isolation, errors, encrypted credentials."""
import pathlib
import uuid

import pytest
import requests
from sqlalchemy import text

from common.db import Store
from common.secrets import ROOT
from gateway import directory

PASSWORD = "a-long-test-password"


@pytest.fixture(scope="module")
def tenants(stack, engines):
    """Two tenants, each with an admin and a viewer."""
    store = Store(engines("gateway"))
    made = {}
    with store.transaction() as session:
        for name in ("alpha", "beta"):
            tid = directory.create_tenant(session, f"{name.title()} MSP", "autotask")
            suffix = uuid.uuid4().hex[:8]
            admin = directory.create_user(session, tid, f"admin-{suffix}@{name}.example", "Admin", "admin", PASSWORD)
            viewer = directory.create_user(session, tid, f"viewer-{suffix}@{name}.example", "Viewer", "viewer", PASSWORD)
            made[name] = {"id": tid, "admin": admin, "viewer": viewer}
    return made


def signed_in(stack, user):
    s = requests.Session()
    r = s.post(stack.url("gateway", "/api/v1/session"), json={"email": user["email"], "password": PASSWORD}, timeout=10)
    assert r.status_code == 200, r.text
    s.headers["X-CSRF-Token"] = r.json()["csrf_token"]
    return s


def token_for(stack, user, role):
    s = signed_in(stack, user)
    r = s.post(stack.url("gateway", "/api/v1/tokens"), json={"name": "script", "role": role}, timeout=10)
    assert r.status_code == 201, r.text
    return r.json()["token"]


def test_session_cookie_is_httponly_and_samesite(stack, tenants):
    r = requests.post(stack.url("gateway", "/api/v1/session"),
                      json={"email": tenants["alpha"]["admin"]["email"], "password": PASSWORD}, timeout=10)
    cookie = r.headers["Set-Cookie"]
    assert "HttpOnly" in cookie and "SameSite=Lax" in cookie


def test_wrong_password_is_a_json_401(stack, tenants):
    r = requests.post(stack.url("gateway", "/api/v1/session"),
                      json={"email": tenants["alpha"]["admin"]["email"], "password": "nope"}, timeout=10)
    assert r.status_code == 401 and r.json() == {"error": "unauthorized", "message": "wrong e-mail or password"}


def test_another_tenants_user_is_404(stack, tenants):
    s = signed_in(stack, tenants["alpha"]["admin"])
    own = s.get(stack.url("gateway", f"/api/v1/users/{tenants['alpha']['viewer']['id']}"), timeout=10)
    assert own.status_code == 200 and own.json()["email"] == tenants["alpha"]["viewer"]["email"]
    other = s.get(stack.url("gateway", f"/api/v1/users/{tenants['beta']['viewer']['id']}"), timeout=10)
    assert other.status_code == 404 and other.json()["error"] == "not_found"
    listed = s.get(stack.url("gateway", "/api/v1/users"), timeout=10).json()["items"]
    assert {u["email"] for u in listed} == {tenants["alpha"]["admin"]["email"], tenants["alpha"]["viewer"]["email"]}


def test_bearer_token_is_scoped_to_its_tenant_and_role(stack, tenants):
    token = token_for(stack, tenants["beta"]["admin"], "viewer")
    h = {"Authorization": f"Bearer {token}"}
    assert requests.get(stack.url("gateway", "/api/v1/tenant"), headers=h, timeout=10).json()["id"] == tenants["beta"]["id"]
    assert requests.get(stack.url("gateway", f"/api/v1/users/{tenants['alpha']['admin']['id']}"), headers=h,
                        timeout=10).status_code == 404
    denied = requests.post(stack.url("gateway", "/api/v1/users"), headers=h, timeout=10,
                           json={"email": "x@beta.example", "name": "X", "role": "viewer", "password": PASSWORD})
    assert denied.status_code == 403 and denied.json()["error"] == "forbidden"
    bad = requests.get(stack.url("gateway", "/api/v1/me"), headers={"Authorization": "Bearer idsk_forged"}, timeout=10)
    assert bad.status_code == 401


def test_cookie_session_needs_csrf_for_writes(stack, tenants):
    s = signed_in(stack, tenants["alpha"]["admin"])
    del s.headers["X-CSRF-Token"]
    r = s.post(stack.url("gateway", "/api/v1/tokens"), json={"name": "n", "role": "viewer"}, timeout=10)
    assert r.status_code == 403 and "CSRF" in r.json()["message"]


@pytest.mark.parametrize("body, content_type, status", [
    ("{not json", "application/json", 400),
    ('{"email": "not-an-email", "name": "", "role": "god", "password": "short"}', "application/json", 400),
    ("email=a", "application/x-www-form-urlencoded", 400),
    ("[1, 2]", "application/json", 400),
])
def test_bad_requests_get_json_4xx_not_500(stack, tenants, body, content_type, status):
    s = signed_in(stack, tenants["alpha"]["admin"])
    r = s.post(stack.url("gateway", "/api/v1/users"), data=body, headers={"Content-Type": content_type}, timeout=10)
    assert r.status_code == status
    assert set(r.json()) >= {"error", "message"}
    assert "Traceback" not in r.text


def test_unknown_endpoint_is_json_404(stack):
    r = requests.get(stack.url("gateway", "/api/v1/no-such-thing"), timeout=10)
    assert r.status_code == 404 and r.json()["error"] == "not_found"


def test_credentials_are_encrypted_at_rest_masked_in_api_and_absent_from_logs(stack, tenants, engines):
    secret = f"at-secret-{uuid.uuid4().hex}"
    code = f"INTEGRATION{uuid.uuid4().hex[:12].upper()}"
    s = signed_in(stack, tenants["alpha"]["admin"])
    r = s.put(stack.url("gateway", "/api/v1/credentials/autotask"), timeout=10,
              json={"api_user": "api@alpha.example", "secret": secret, "integration_code": code})
    assert r.status_code == 200, r.text
    assert r.json()["summary"]["secret"] == "****" + secret[-4:]
    assert secret not in r.text and code not in r.text
    with engines("gateway").connect() as conn:
        dump = " ".join(str(v) for row in conn.execute(text("select * from credentials")) for v in row)
    assert secret not in dump and code not in dump and "api@alpha.example" in dump  # plain fields stay readable
    # a viewer may not even see the masked form
    v = signed_in(stack, tenants["alpha"]["viewer"])
    assert v.get(stack.url("gateway", "/api/v1/credentials"), timeout=10).status_code == 403
    # the services receive only ciphertext, and no log line of any process holds the secret
    with stack.rpc() as rpc:
        ciphertext = rpc.gateway.tenant_credentials(tenants["alpha"]["id"], "autotask")
    assert secret not in ciphertext
    logs = pathlib.Path(ROOT, ".run", stack.env["IDSYNC_STACK"], "logs")
    for path in logs.glob("*.jsonl"):
        content = path.read_text(errors="replace")
        assert secret not in content and code not in content, path.name


def test_openapi_document(stack):
    r = requests.get(stack.url("gateway", "/api/openapi.json"), timeout=10)
    assert r.status_code == 200
    paths = r.json()["paths"]
    assert {"/api/v1/users", "/api/v1/credentials/{kind}", "/api/v1/tokens"} <= set(paths)
