"""Gateway: the portal and the JSON API under /api/v1. Thin routes; rules live in the modules they call."""
from nameko.rpc import RpcProxy, rpc
from nameko.web.handlers import http
from sqlalchemy import select, update

from common.db import Database
from common.service_base import ServiceBase
from gateway import auth, directory, openapi, portal, schemas, system
from gateway.portal_mapping import MappingPages
from gateway.portal_postings import PostingPages
from gateway.portal_reports import ReportPages
from gateway.routes_mapping import MappingRoutes
from gateway.routes_postings import PostingRoutes
from gateway.routes_psa import PsaRoutes
from gateway.routes_sync import SyncRoutes
from gateway.api import Caller, json_response, read_json, route
from gateway.errors import BadRequest, NotFound
from gateway.models import api_tokens
from common.vault import CREDENTIAL_FIELDS, Vault




class GatewayService(ServiceBase, portal.PortalPages, MappingPages, PostingPages, ReportPages, SyncRoutes, PsaRoutes,
                     MappingRoutes, PostingRoutes):
    name = "gateway"
    db = Database()
    caller = Caller()
    marketplace = RpcProxy("marketplace")
    mapping = RpcProxy("mapping")
    autotask = RpcProxy("autotask")
    connectwise = RpcProxy("connectwise")

    # --- session API (scripts may prefer tokens) ---------------------------------------------
    @route("POST", "/api/v1/session", "Sign in; sets the session cookie, returns the CSRF token",
           tags=("auth",), body=schemas.Login, public=True)
    def api_login(self, request):
        data = read_json(request, schemas.Login())
        with self.db.transaction() as session:
            user = auth.authenticate_password(session, data["email"], data["password"])
            token, csrf = auth.open_session(session, user, self.caller_hours())
        response = json_response({"csrf_token": csrf, "user_id": user.id, "tenant_id": user.tenant_id, "role": user.role})
        portal.set_session_cookie(response, token, self.config)
        return response

    @route("DELETE", "/api/v1/session", "Sign out", tags=("auth",), public=True)
    def api_logout(self, request):
        self.caller.current()  # checks CSRF when signed in by cookie
        with self.db.transaction() as session:
            auth.close_session(session, request.cookies.get(auth.SESSION_COOKIE))
        response = json_response({"signed_out": True})
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    @route("GET", "/api/v1/me", "Who am I", tags=("auth",))
    def me(self, request):
        p = self.caller.require("read")
        with self.db.transaction() as session:
            user = directory.get_user(session, p.tenant_id, p.user_id)
        return {"user": schemas.UserOut().dump(user), "tenant_id": p.tenant_id, "role": p.role, "via": p.via}

    # --- tenant, users --------------------------------------------------------------------------
    @route("GET", "/api/v1/tenant", "Your tenant", tags=("tenant",), response=schemas.TenantOut)
    def tenant(self, request):
        p = self.caller.require("read")
        with self.db.transaction() as session:
            return schemas.TenantOut().dump(directory.get_tenant(session, p.tenant_id))

    @route("GET", "/api/v1/users", "Users of your tenant", tags=("users",), response=schemas.UserOut(many=True))
    def users(self, request):
        p = self.caller.require("read")
        with self.db.transaction() as session:
            return {"items": schemas.UserOut(many=True).dump(directory.list_users(session, p.tenant_id))}

    @route("GET", "/api/v1/users/<user_id>", "One user of your tenant", tags=("users",), response=schemas.UserOut)
    def user(self, request, user_id):
        p = self.caller.require("read")
        with self.db.transaction() as session:
            return schemas.UserOut().dump(directory.get_user(session, p.tenant_id, user_id))

    @route("POST", "/api/v1/users", "Add a user to your tenant", capability="admin", tags=("users",),
           body=schemas.UserIn, response=schemas.UserOut)
    def create_user(self, request):
        p = self.caller.require("admin")
        data = read_json(request, schemas.UserIn())
        with self.db.transaction() as session:
            user = directory.create_user(session, p.tenant_id, **data)
        return json_response(schemas.UserOut().dump(user), status=201)

    # --- API tokens -----------------------------------------------------------------------------
    @route("POST", "/api/v1/tokens", "Create an API token (shown once)", capability="admin", tags=("auth",),
           body=schemas.TokenIn, response=schemas.TokenOut)
    def create_token(self, request):
        p = self.caller.require("admin")
        data = read_json(request, schemas.TokenIn())
        with self.db.transaction() as session:
            token_id, token = auth.issue_api_token(session, p, data["name"], data["role"])
        return json_response({"id": token_id, "name": data["name"], "role": data["role"], "token": token}, status=201)

    @route("GET", "/api/v1/tokens", "API tokens of your tenant (never the secret)", capability="admin", tags=("auth",))
    def list_tokens(self, request):
        p = self.caller.require("admin")
        t = api_tokens
        with self.db.transaction() as session:
            rows = session.execute(select(t.c.id, t.c.name, t.c.role, t.c.created_at, t.c.last_used_at, t.c.revoked_at)
                                   .where(t.c.tenant_id == p.tenant_id).order_by(t.c.created_at))
            return {"items": [dict(r._mapping) for r in rows]}

    @route("DELETE", "/api/v1/tokens/<token_id>", "Revoke an API token", capability="admin", tags=("auth",))
    def revoke_token(self, request, token_id):
        p = self.caller.require("admin")
        with self.db.transaction() as session:
            done = session.execute(update(api_tokens).where(api_tokens.c.tenant_id == p.tenant_id,
                                                            api_tokens.c.id == token_id)
                                   .values(revoked_at=auth.now())).rowcount
        if not done:
            raise NotFound("no such token")
        return {"revoked": token_id}

    # --- vendor credentials -----------------------------------------------------------------------
    @route("GET", "/api/v1/credentials", "Vendor connections (secrets masked)", capability="admin",
           tags=("settings",), response=schemas.CredentialSummary(many=True))
    def credentials(self, request):
        p = self.caller.require("admin")
        with self.db.transaction() as session:
            return {"items": schemas.CredentialSummary(many=True).dump(directory.list_credentials(session, p.tenant_id))}

    @route("PUT", "/api/v1/credentials/<kind>", "Store a vendor connection, encrypted", capability="admin",
           tags=("settings",))
    def put_credentials(self, request, kind):
        p = self.caller.require("admin")
        if kind not in CREDENTIAL_FIELDS:
            raise NotFound(f"unknown credential kind {kind!r}; use one of {sorted(CREDENTIAL_FIELDS)}")
        document = read_json(request, schemas.credential_schema(kind))
        with self.db.transaction() as session:
            directory.store_credentials(session, self.vault(), p.tenant_id, kind, document)
            stored = [c for c in directory.list_credentials(session, p.tenant_id) if c["kind"] == kind][0]
        return schemas.CredentialSummary().dump(stored)

    # --- system -----------------------------------------------------------------------------------
    @route("GET", "/api/v1/system/health", "Health of every service", tags=("system",))
    def system_health(self, request):
        self.caller.require("read")
        return system.health_of_all()

    @route("GET", "/api/openapi.json", "This document", tags=("system",), public=True)
    def openapi_document(self, request):
        return openapi.build()

    @http("GET,POST,PUT,PATCH,DELETE", "/api/<path:rest>")
    def api_not_found(self, request, rest):
        return json_response({"error": "not_found", "message": f"no endpoint {request.method} /api/{rest}"}, 404)

    # --- for the other services -------------------------------------------------------------------
    @rpc
    def tenant_credentials(self, tenant_id, kind):
        """The Fernet ciphertext only: the calling service decrypts it with its own key copy."""
        if kind not in CREDENTIAL_FIELDS:
            raise BadRequest(f"unknown credential kind {kind!r}")
        with self.db.transaction() as session:
            return directory.credential_ciphertext(session, tenant_id, kind)

    @rpc
    def tenant_profile(self, tenant_id):
        """{id, name, psa} of one tenant: which PSA its desired lines go to."""
        with self.db.transaction() as session:
            tenant = directory.get_tenant(session, tenant_id)
        return {"id": tenant["id"], "name": tenant["name"], "psa": tenant["psa"]}

    @rpc
    def tenants_with_credentials(self, kind):
        """Tenant ids that have stored a connection of this kind (the marketplace sync's to-do list)."""
        with self.db.transaction() as session:
            return directory.tenants_with_credentials(session, kind)

    # --- helpers ----------------------------------------------------------------------------------
    def vault(self):
        return Vault.from_config(self.config)

    def caller_hours(self):
        return int(self.config.get("SESSION_HOURS", 12))
