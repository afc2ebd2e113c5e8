"""ConnectWise Manage REST (apis/3.0) simulator: vendor routes and /_sim admin routes."""
from __future__ import annotations

import functools
import math

import flask

from simulators import kit

from . import generator
from .conditions import ConditionError, compile_conditions, parse, required_values
from .paging import (PagingError, forward_only, navigable, parse_order, parse_paging, project,
                     sort_records)
from .state import ALIASES, SCHEMAS, ApiError, Store

BASE = "/v4_6_release/apis/3.0"
# URL collection path -> entity kind (additions live under their agreement, see below).
COLLECTIONS = {"company/companies": "company", "finance/agreements": "agreement",
               "procurement/catalog": "catalog"}

DEFAULT_CONFIG = {
    "rate_limit_per_minute": 1000,   # per companyId; the vendor throttles around 1000/min
    "rate_window_seconds": 60,
    "auth_failure_status": 401,      # the vendor answers bad credentials with 401, sometimes 404
    "missing_client_id_status": 401,  # 400 also seen in the wild; configurable
    "default_page_size": 25,
    "max_page_size": 1000,
    "page_size_over_max": "clamp",   # or "error" (400)
}

_STATUS_CODES = {400: "BadRequest", 401: "Unauthorized", 403: "Forbidden", 404: "NotFound",
                 405: "MethodNotAllowed", 409: "Conflict", 415: "UnsupportedMediaType",
                 429: "TooManyRequests", 500: "UnexpectedError", 502: "BadGateway",
                 503: "ServiceUnavailable", 504: "GatewayTimeout"}


def throttle_body(seconds):
    return {"error": "ConnectWiseAPI",
            "message": f"Too many requests. Please try again in {seconds} seconds."}


def error_body(status, message):
    """The vendor's error shape, used by the kit for injected faults and routing errors."""
    if status == 429:
        return throttle_body(30), {"Retry-After": "30"}
    return {"code": _STATUS_CODES.get(status, "Error"), "message": message}, {}


class ConnectWiseSim:
    """Vendor state hung on app.extensions["connectwise"]."""

    def __init__(self, config=None):
        self.base_config = {**DEFAULT_CONFIG, **(config or {})}
        self.config = dict(self.base_config)
        self.store = Store()
        self.limiter = kit.SlidingWindowLimit(self.config["rate_limit_per_minute"],
                                              self.config["rate_window_seconds"])

    def configure(self, changes):
        unknown = set(changes) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        if changes.get("auth_failure_status", 401) not in (401, 404):
            raise ValueError("auth_failure_status must be 401 or 404")
        if changes.get("missing_client_id_status", 401) not in (400, 401):
            raise ValueError("missing_client_id_status must be 400 or 401")
        if changes.get("page_size_over_max", "clamp") not in ("clamp", "error"):
            raise ValueError("page_size_over_max must be clamp or error")
        self.config.update(changes)
        self.limiter.configure(self.config["rate_limit_per_minute"],
                               self.config["rate_window_seconds"])

    def reset(self):
        self.store.reset()
        self.config = dict(self.base_config)
        self.limiter = kit.SlidingWindowLimit(self.config["rate_limit_per_minute"],
                                              self.config["rate_window_seconds"])


def create_app(seed=0, config=None):
    app = kit.make_app("connectwise", seed)
    sim = app.extensions["sim"]
    sim.error_body = error_body
    cw = ConnectWiseSim(config)
    app.extensions["connectwise"] = cw
    api = flask.Blueprint("cw_api", __name__, url_prefix=BASE)

    def locked(fn):
        @functools.wraps(fn)
        def wrapper(*a, **kw):
            with sim.lock:
                return fn(*a, **kw)
        return wrapper

    @app.errorhandler(ApiError)
    def _api_error(exc):
        resp = flask.jsonify(exc.body())
        resp.status_code = exc.status
        resp.headers.update(exc.headers)
        return resp

    # --- auth, clientId, throttle ------------------------------------------------------------
    @api.before_request
    def _authenticate():
        fail = cw.config["auth_failure_status"]
        auth = flask.request.authorization
        if auth is None or auth.type != "basic" or "+" not in (auth.username or ""):
            raise ApiError(fail, _STATUS_CODES[fail], "Authentication failed: "
                           "use Basic base64(companyId+publicKey:privateKey)")
        company_id, public_key = auth.username.split("+", 1)
        with sim.lock:
            tenant = cw.store.tenant(company_id)
            cred = None
            if tenant is not None:
                cred = next((c for c in tenant.credentials if c["public_key"] == public_key
                             and c["private_key"] == auth.password), None)
        if cred is None:
            raise ApiError(fail, _STATUS_CODES[fail], "Authentication failed: "
                           "invalid company, public key or private key")
        client_id = flask.request.headers.get("clientId", "").strip()
        if not client_id:
            status = cw.config["missing_client_id_status"]
            raise ApiError(status, _STATUS_CODES[status], "clientId header is required")
        if cred["client_id"] and client_id != cred["client_id"]:
            raise ApiError(401, "Unauthorized", "clientId is not valid for this integration")
        flask.g.sim_tenant = tenant.company_id   # the write log says whose write it was
        allowed, _, reset = cw.limiter.hit(tenant.company_id.casefold())
        if not allowed:
            secs = max(1, math.ceil(reset))
            resp = flask.jsonify(throttle_body(secs))
            resp.status_code = 429
            resp.headers["Retry-After"] = str(secs)
            return resp
        if flask.request.method != "GET" and cred["read_only"]:
            raise ApiError(403, "Forbidden", "You do not have permission to write this record")
        if flask.request.method in ("POST", "PUT", "PATCH"):
            if not (flask.request.mimetype or "").endswith("json"):
                raise ApiError(415, "UnsupportedMediaType",
                               "Content-Type must be application/json")
            body = flask.request.get_json(silent=True)
            if body is None:
                raise ApiError(400, "InvalidObject", "The request body is not valid JSON")
            flask.g.cw_body = body
        flask.g.cw_tenant = tenant
        return None

    # --- list helpers ------------------------------------------------------------------------
    def _bad_request(exc, field):
        code = {"conditions": "InvalidCondition", "orderBy": "InvalidOrderBy"}.get(field, "InvalidValue")
        return ApiError(400, "InvalidObject", str(exc), [
            {"code": code, "message": str(exc), "resource": "query", "field": field}])

    def _filter(kind, records_for):
        """Apply conditions; records_for(ids_or_None) returns candidate records so callers can
        use an index when the conditions pin the id."""
        args = flask.request.args
        schema = SCHEMAS[kind]
        try:
            pred, ast = compile_conditions(args.get("conditions"), schema, ALIASES)
            # childConditions/customFieldConditions: syntax-checked; our entities have no
            # child collections or custom fields, so they filter nothing.
            for extra in ("childConditions", "customFieldConditions"):
                if args.get(extra, "").strip():
                    parse(args[extra])
        except ConditionError as exc:
            raise _bad_request(exc, "conditions") from None
        ids = required_values(ast, schema, "id")
        return [r for r in records_for(ids) if pred(r)]

    def _candidates(table):
        def records_for(ids):
            if ids is None:
                return table.values()
            return [table[i] for i in ids if i in table]
        return records_for

    def _list(kind, records_for):
        args = flask.request.args
        records = _filter(kind, records_for)
        try:
            paging = parse_paging(args, flask.request.headers, cw.config)
            order = parse_order(args.get("orderBy"), SCHEMAS[kind], ALIASES)
            if paging["forward_only"] and order != [(("id",), False)]:
                raise PagingError("orderBy is not supported with forward-only pagination "
                                  "(results come in id order)", "orderBy")
        except PagingError as exc:
            raise _bad_request(exc, exc.field) from None
        records = sort_records(records, order)
        base_url = flask.request.base_url
        if paging["forward_only"]:
            items, link = forward_only(records, paging, base_url, args)
        else:
            items, link = navigable(records, paging, base_url, args)
        fields = args.get("fields")
        resp = flask.jsonify([project(r, fields, SCHEMAS[kind]) for r in items])
        if link:
            resp.headers["Link"] = link
        if paging["forward_only"]:
            resp.headers["pagination-type"] = "forward-only"
        return resp

    def _count(kind, records_for):
        return {"count": len(_filter(kind, records_for))}

    def _one(kind, rec):
        return flask.jsonify(project(rec, flask.request.args.get("fields"), SCHEMAS[kind]))

    # --- top-level collections ---------------------------------------------------------------
    for coll, kind in COLLECTIONS.items():
        def make(kind=kind):
            @locked
            def list_(): return _list(kind, _candidates(flask.g.cw_tenant.table(kind)))

            @locked
            def count(): return _count(kind, _candidates(flask.g.cw_tenant.table(kind)))

            @locked
            def create():
                rec = flask.g.cw_tenant.create(kind, flask.g.cw_body)
                return flask.jsonify(rec), 201

            @locked
            def get(rid): return _one(kind, flask.g.cw_tenant.get(kind, rid))

            @locked
            def put(rid): return flask.jsonify(flask.g.cw_tenant.replace(kind, rid, flask.g.cw_body))

            @locked
            def patch(rid): return flask.jsonify(flask.g.cw_tenant.patch(kind, rid, flask.g.cw_body))

            @locked
            def delete(rid):
                flask.g.cw_tenant.delete(kind, rid)
                return "", 204
            return list_, count, create, get, put, patch, delete

        list_, count, create, get, put, patch, delete = make()
        api.add_url_rule(f"/{coll}", f"{kind}_list", list_, methods=["GET"])
        api.add_url_rule(f"/{coll}", f"{kind}_create", create, methods=["POST"])
        api.add_url_rule(f"/{coll}/count", f"{kind}_count", count, methods=["GET"])
        api.add_url_rule(f"/{coll}/<int:rid>", f"{kind}_get", get, methods=["GET"])
        api.add_url_rule(f"/{coll}/<int:rid>", f"{kind}_put", put, methods=["PUT"])
        api.add_url_rule(f"/{coll}/<int:rid>", f"{kind}_patch", patch, methods=["PATCH"])
        api.add_url_rule(f"/{coll}/<int:rid>", f"{kind}_delete", delete, methods=["DELETE"])

    # --- agreement additions -----------------------------------------------------------------
    ADD = "/finance/agreements/<int:agr>/additions"

    def _additions(agr):
        table = flask.g.cw_tenant.agreement_additions(agr)  # 404 for an unknown agreement
        return _candidates(table)

    @api.get(ADD)
    @locked
    def additions_list(agr):
        return _list("addition", _additions(agr))

    @api.get(ADD + "/count")
    @locked
    def additions_count(agr):
        return _count("addition", _additions(agr))

    @api.post(ADD)
    @locked
    def additions_create(agr):
        tenant = flask.g.cw_tenant
        tenant.get("agreement", agr)
        return flask.jsonify(tenant.create("addition", flask.g.cw_body, agreement_id=agr)), 201

    @api.get(ADD + "/<int:rid>")
    @locked
    def additions_get(agr, rid):
        return _one("addition", flask.g.cw_tenant.get_addition(agr, rid))

    @api.put(ADD + "/<int:rid>")
    @locked
    def additions_put(agr, rid):
        return flask.jsonify(flask.g.cw_tenant.replace("addition", rid, flask.g.cw_body, agr))

    @api.patch(ADD + "/<int:rid>")
    @locked
    def additions_patch(agr, rid):
        return flask.jsonify(flask.g.cw_tenant.patch("addition", rid, flask.g.cw_body, agr))

    @api.delete(ADD + "/<int:rid>")
    @locked
    def additions_delete(agr, rid):
        flask.g.cw_tenant.delete("addition", rid, agr)
        return "", 204

    app.register_blueprint(api)

    # --- codebase discovery (no auth, site root) ---------------------------------------------
    @app.get("/login/companyinfo/<company_id>")
    @locked
    def companyinfo(company_id):
        tenant = cw.store.tenant(company_id)
        if tenant is None:
            raise ApiError(404, "NotFound", f"Company {company_id} not found")
        return {"CompanyName": tenant.name, "Codebase": "v4_6_release/",
                "VersionCode": "v2025.1", "VersionNumber": "v4.6.0",
                "CompanyID": tenant.company_id, "IsCloud": True,
                "SiteUrl": flask.request.host}

    # --- admin ---------------------------------------------------------------------------------
    def _json_object():
        body = flask.request.get_json(silent=True)
        if body is None and not flask.request.get_data():
            body = {}
        if not isinstance(body, dict):
            raise ApiError(400, "BadRequest", "JSON object body required")
        return body

    def _admin_error(exc):
        return flask.jsonify({"error": str(exc)}), 400

    @app.post("/_sim/reset")
    @locked
    def sim_reset():
        cw.reset()
        sim.clear_faults()
        sim.clear_writes()
        sim.request_counts(reset=True)
        return {"reset": True}

    @app.post("/_sim/seed")
    @locked
    def sim_seed():
        body = _json_object()
        sets = body.get("companies_sets")
        if not isinstance(sets, list):
            return _admin_error("companies_sets (list) is required")
        if body.get("reset"):
            cw.store.reset()
        try:
            loaded = [cw.store.load_set(doc).summary() for doc in sets]
        except (ValueError, TypeError, KeyError) as exc:
            return _admin_error(exc)
        return {"loaded": loaded}

    @app.post("/_sim/generate")
    @locked
    def sim_generate():
        body = _json_object()
        try:
            tenant = generator.generate(cw.store, **body)
        except (ValueError, TypeError) as exc:
            return _admin_error(exc)
        return tenant.summary()

    @app.get("/_sim/state")
    @locked
    def sim_state():
        args = flask.request.args
        full = args.get("full", "") in ("1", "true", "yes")
        only = args.get("company_id")
        tenants = [t for t in cw.store.tenants.values()
                   if only is None or t.company_id.casefold() == only.casefold()]
        return {"config": cw.config,
                "tenants": [t.dump() if full else t.summary() for t in tenants]}

    @app.get("/_sim/config")
    def sim_config_get():
        return cw.config

    @app.post("/_sim/config")
    @locked
    def sim_config():
        try:
            cw.configure(_json_object())
        except ValueError as exc:
            return _admin_error(exc)
        return cw.config

    return app
