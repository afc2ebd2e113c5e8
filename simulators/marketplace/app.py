"""Flask routes of the Ingram Micro Cloud Marketplace simulator.

Vendor API under /marketplace/{region}/ (any region): POST token, GET customers,
products, products/{id}, subscriptions, subscriptions/{id} - customers and subscriptions of the
credential's own account only. Admin API under /_sim/ (plus the kit's fault/write-log/count
routes). See simulators/README.md.
"""
from __future__ import annotations

import functools
import math
import re
import time
import uuid
from http import HTTPStatus

import flask

from .. import kit
from . import views
from .generator import DEFAULT_ANCHOR, generate
from .state import Market, SimError, account_name, iso, norm_dt, parse_dt

PREFIX = "/marketplace/<region>"
DEFAULT_CONFIG = {
    "token_ttl_seconds": 3600.0,  # [guess] real lifetime unknown
    "rate_limit_per_minute": 60,  # [doc] GETs per minute per endpoint per API app
    "rate_window_seconds": 60.0,
    "max_limit": 100,  # [guess] bigger limits are clamped
    "default_limit": 10,  # spec's paging example shows limit 10
    "money_as": "string",  # "string" ("22.00") or "number" (22.0)
}


def error_body(status: int, message: str) -> tuple[dict, dict]:
    """The marketplace error shape; sends both timeStamp and timestamp (clients differ)."""
    now = kit.utcnow_iso()
    try:
        path = flask.request.path
    except RuntimeError:  # outside a request
        path = ""
    try:
        reason = HTTPStatus(status).phrase
    except ValueError:
        reason = "Error"
    return {"timeStamp": now, "timestamp": now, "status": status, "error": reason, "message": message,
            "path": path, "correlationId": str(uuid.uuid4())}, {}


def _validate_config(changes: dict, current: dict) -> dict:
    out = dict(current)
    for key, value in changes.items():
        if key not in DEFAULT_CONFIG:
            raise SimError(400, f"unknown config key {key!r}")
        if key == "money_as":
            if value not in ("string", "number"):
                raise SimError(400, "money_as must be 'string' or 'number'")
            out[key] = value
            continue
        try:
            number = float(value)
        except (TypeError, ValueError) as exc:
            raise SimError(400, f"{key} must be a number") from exc
        if number <= 0:
            raise SimError(400, f"{key} must be > 0")
        out[key] = number if key in ("token_ttl_seconds", "rate_window_seconds") else int(number)
    return out


def create_app(seed: int = 0, config: dict | None = None) -> flask.Flask:
    app = kit.make_app("marketplace", seed)
    sim = app.extensions["sim"]
    sim.error_body = error_body
    market = Market()
    cfg = _validate_config(config or {}, DEFAULT_CONFIG)
    limiter = kit.SlidingWindowLimit(cfg["rate_limit_per_minute"], cfg["rate_window_seconds"])
    app.extensions["marketplace"] = market  # for in-process tests and the CLI
    app.extensions["marketplace_config"] = cfg

    def money():
        return views.money_formatter(cfg["money_as"])

    def is_admin() -> bool:
        return flask.request.path.startswith(kit.ADMIN_PREFIX)

    @app.errorhandler(SimError)
    def _sim_error(exc: SimError):
        if is_admin():
            return {"error": exc.message}, exc.status
        return sim.error_response(exc.status, exc.message)

    # --- vendor API -------------------------------------------------------------------
    @app.post(PREFIX + "/token")
    def token(region):
        auth = flask.request.authorization
        if auth is None or auth.type != "basic":
            raise SimError(401, "Full authentication is required to access this resource")
        body = flask.request.get_json(silent=True) or {}
        with sim.lock:
            value = market.issue_token(auth.username or "", auth.password or "",
                                       flask.request.headers.get("X-Subscription-Key"),
                                       body.get("marketplace") if isinstance(body, dict) else None,
                                       cfg["token_ttl_seconds"], time.time())
        return {"token": value}

    def authenticate() -> dict:
        header = flask.request.headers.get("Authorization", "")
        bearer = header[7:].strip() if header[:7].lower() == "bearer " else None
        with sim.lock:
            return market.check_token(bearer, flask.request.headers.get("X-Subscription-Key"), time.time())

    def vendor_get(rule: str):
        """Register a GET route with auth and the per-endpoint, per-API-app rate limit."""
        template = "GET " + re.sub(r"<(?:[^:<>]+:)?[^<>]+>", "{id}", rule)

        def deco(fn):
            @functools.wraps(fn)
            def view(region, **kwargs):
                cred = authenticate()
                allowed, remaining, reset = limiter.hit((cred["user"], template))
                headers = {"X-RateLimit-Limit": str(limiter.limit), "X-RateLimit-Remaining": str(remaining),
                           "X-RateLimit-Reset": str(math.ceil(reset))}
                if not allowed:
                    headers["Retry-After"] = headers["X-RateLimit-Reset"]
                    return sim.error_response(
                        429, f"Rate limit is exceeded. Try again in {headers['Retry-After']} seconds.", headers)
                try:
                    resp = flask.make_response(fn(cred["account"], **kwargs))
                except SimError as exc:
                    resp = sim.error_response(exc.status, exc.message)
                resp.headers.update(headers)
                return resp

            app.add_url_rule(PREFIX + rule, endpoint=fn.__name__, view_func=view, methods=["GET"])
            return view
        return deco

    def paging() -> tuple[int, int]:
        args = flask.request.args
        try:
            offset = int(args.get("offset", 0))
            limit = int(args.get("limit", cfg["default_limit"]))
        except ValueError as exc:
            raise SimError(400, "offset and limit must be integers") from exc
        if offset < 0 or limit < 1:
            raise SimError(400, "offset must be >= 0 and limit >= 1")
        return offset, min(limit, cfg["max_limit"])

    def envelope(data: list, offset: int, limit: int, total: int) -> dict:
        return {"data": data, "pagination": {"offset": offset, "limit": limit, "total": total}}

    @vendor_get("/customers")
    def customers(account):
        offset, limit = paging()
        with sim.lock:
            ids, total = market.page("customers", offset, limit, account)
            data = [views.customer_out(market.customers[i]) for i in ids]
        return envelope(data, offset, limit, total)

    @vendor_get("/products")
    def products(_account):  # the catalogue is shared by every account
        offset, limit = paging()
        fmt = money()
        with sim.lock:
            ids, total = market.page("products", offset, limit)
            data = [views.product_out(market.products[i], fmt) for i in ids]
        return envelope(data, offset, limit, total)

    @vendor_get("/products/<product_id>")
    def product(_account, product_id):
        with sim.lock:
            item = market.products.get(product_id)
            if item is None:
                raise SimError(404, f"Product {product_id} not found")
            return views.product_out(item, money())

    @vendor_get("/subscriptions")
    def subscriptions(account):
        offset, limit = paging()
        args = flask.request.args
        statuses = {s.strip() for s in args.get("status", "").split(",") if s.strip()} or None
        date_from = norm_dt(args["creationDateFrom"]) if args.get("creationDateFrom") else None
        date_to = None
        if args.get("creationDateTo"):  # a bare date includes that whole day
            try:
                date_to = iso(parse_dt(args["creationDateTo"], end_of_day=True))
            except ValueError as exc:
                raise SimError(400, f"invalid date: {args['creationDateTo']!r}") from exc
        with sim.lock:
            ids = market.subscription_ids(args.get("customerId") or None, statuses, date_from, date_to, account)
            data = [views.summary_out(market.subs[i]) for i in ids[offset:offset + limit]]
            total = len(ids)
        return envelope(data, offset, limit, total)

    @vendor_get("/subscriptions/<sub_id>")
    def subscription(account, sub_id):
        with sim.lock:
            return views.detail_out(market.get_subscription(sub_id, account), money())

    # --- admin API --------------------------------------------------------------------
    def body() -> dict:
        data = flask.request.get_json(silent=True)
        if data is None:
            data = {}
        if not isinstance(data, dict):
            raise SimError(400, "JSON object body required")
        return data

    @app.post("/_sim/reset")
    def sim_reset():
        with sim.lock:
            market.clear()
            limiter.reset()
        return {"reset": True}

    @app.get("/_sim/config")
    def sim_config_get():
        return dict(cfg)

    @app.post("/_sim/config")
    def sim_config_set():
        with sim.lock:
            cfg.update(_validate_config(body(), cfg))
            limiter.configure(cfg["rate_limit_per_minute"], cfg["rate_window_seconds"])
            limiter.reset()  # new limits start from a clean window
        return dict(cfg)

    @app.post("/_sim/seed")
    def sim_seed():
        doc = body()
        with sim.lock:
            return market.load(doc)

    @app.post("/_sim/generate")
    def sim_generate():
        spec = body()
        try:
            params = {"seed": int(spec.get("seed", 1)), "customers": int(spec.get("customers", 50)),
                      "lines": int(spec.get("lines", 200))}
        except (TypeError, ValueError) as exc:
            raise SimError(400, "seed, customers and lines must be integers") from exc
        account = account_name(spec.get("account"))
        with sim.lock:
            doc = generate(**params, anchor=spec.get("anchor") or DEFAULT_ANCHOR, first_ids=market.next_ids(),
                           credentials=spec.get("credentials"), account=account)
            return market.load(doc)

    @app.get("/_sim/state")
    def sim_state():
        """Everything, or with ?account=X that account's credentials, customers, subscriptions
        and counts (products are shared: all of them either way)."""
        fmt = money()
        account = flask.request.args.get("account") or None
        with sim.lock:
            if account is None:
                creds, custs, subs = market.credentials.values(), market.customers.values(), market.subs.values()
            else:
                creds = [c for c in market.credentials.values() if c["account"] == account]
                custs = [c for c in market.customers.values() if c["account"] == account]
                subs = [s for s in market.subs.values() if market.account_of(s) == account]
            users = {c["user"] for c in creds}
            tokens = (len(market.tokens) if account is None
                      else sum(1 for t in market.tokens.values() if t["user"] in users))
            return {
                "config": dict(cfg),
                **({} if account is None else {"account": account}),
                "counts": market.counts(account),
                "accounts": market.accounts(),
                "credentials": [dict(c) for c in creds],
                "tokens": tokens,
                "customers": [views.admin_customer(c) for c in custs],
                "products": [views.product_out(p, fmt) for p in market.products.values()],
                "subscriptions": [views.admin_subscription(s, fmt) for s in subs],
            }

    @app.post("/_sim/customers")
    def sim_add_customer():
        doc = body()
        with sim.lock:
            return views.admin_customer(market.add_customer(doc)), 201

    @app.post("/_sim/subscriptions")
    def sim_add_subscription():
        doc = body()
        with sim.lock:
            if doc.get("id") and str(doc["id"]) in market.subs:
                raise SimError(409, f"subscription {doc['id']} exists")
            return views.detail_out(market.add_subscription(doc), money()), 201

    @app.post("/_sim/subscriptions/changes")
    def sim_change_many():
        doc = body()
        with sim.lock:
            return market.change_many(doc.get("changes"))

    @app.post("/_sim/subscriptions/<sub_id>/change")
    def sim_change(sub_id):
        doc = body()
        with sim.lock:
            return views.detail_out(market.change_subscription(sub_id, doc), money())

    @app.post("/_sim/subscriptions/<sub_id>/cancel")
    def sim_cancel(sub_id):
        doc = body()
        with sim.lock:
            return views.detail_out(market.cancel_subscription(sub_id, doc), money())

    @app.post("/_sim/subscriptions/<sub_id>/corrupt")
    def sim_corrupt(sub_id):
        doc = body()
        with sim.lock:
            return views.detail_out(market.corrupt_subscription(sub_id, doc), money())

    return app

