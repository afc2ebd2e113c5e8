"""Autotask PSA REST (ATServicesRest V1.0) simulator: routes, auth, limits, admin API."""
from __future__ import annotations

import collections
import datetime as dt
import json
import math
import time
import urllib.parse

import flask
from werkzeug.wrappers import Response

from simulators import kit

from .generator import dump, generate, load_seed
from .query import QueryError, compile_filter, project, resolve_include
from .state import ENTITIES, ENTITY_BY_LOWER, QUERYABLE, UDF_ENTITIES, Store, WriteError

PREFIX = "/ATServicesRest/V1.0"
THREAD_MESSAGE = "The Autotask API thread threshold of {n} threads has been exceeded"
# child collections of a contract: URL name -> entity
CHILDREN = {"Services": "ContractServices", "ServiceAdjustments": "ContractServiceAdjustments",
            "Charges": "ContractCharges", "ServiceUnits": "ContractServiceUnits"}
_CANON = {**ENTITY_BY_LOWER, "zoneinformation": "ZoneInformation",
          "thresholdinformation": "ThresholdInformation"}
_CHILD_CANON = {name.lower(): name for name in CHILDREN}
_WORDS = {"query": "query", "count": "count", "next": "next"}

DEFAULT_CONFIG = {
    "hourly_limit": 10_000,          # requests per rolling window per database
    "hourly_window_seconds": 3600,
    "latency_50_seconds": 0.5,       # added to every call once 50% of the budget is used
    "latency_75_seconds": 1.0,       # ... once 75% is used
    "thread_limit": 3,               # in-flight calls per (database, integration code, entity)
    "max_records": 500,              # page size ceiling
    "today": None,                   # "YYYY-MM-DD" to pin the simulator's date; None = UTC today
    "base_url": None,                # zone url / page urls; None = the request's host
}


def canonical_path(path: str) -> str:
    """Case-insensitive prefix and entity names, rewritten to one spelling.

    /atservicesrest/v1.0/contracts/5/services -> /ATServicesRest/V1.0/Contracts/5/Services,
    so routing, fault regexes and the write log all see a single form.
    """
    parts = path.split("/")
    if len(parts) < 3 or parts[1].lower() != "atservicesrest" or parts[2].lower() != "v1.0":
        return path
    parts[1], parts[2] = "ATServicesRest", "V1.0"
    if len(parts) > 3:
        parts[3] = _CANON.get(parts[3].lower(), parts[3])
    for i in range(4, len(parts)):
        low = parts[i].lower()
        if low in _WORDS:
            parts[i] = _WORDS[low]
        elif i == 5 and parts[3] == "Contracts" and low in _CHILD_CANON:
            parts[i] = _CHILD_CANON[low]
    return "/".join(parts)


def endpoint_entity(path: str) -> str | None:
    """The "object endpoint" a vendor path addresses (thread limits are per endpoint)."""
    parts = path.split("/")
    if len(parts) < 4 or parts[1] != "ATServicesRest":
        return None
    if parts[3] == "Contracts" and len(parts) > 5 and parts[5] in CHILDREN:
        return CHILDREN[parts[5]]
    return parts[3] or None


class _VendorMiddleware:
    """Outermost WSGI layer: path casing, then the concurrent-thread limit.

    It wraps the kit's whole Flask app so injected latency faults and threshold
    latency happen while the request holds its thread slot, as on the vendor.
    """

    def __init__(self, wsgi_app, sim: "AutotaskSim"):
        self.wsgi_app = wsgi_app
        self.sim = sim

    def __call__(self, environ, start_response):
        path = canonical_path(environ.get("PATH_INFO", ""))
        environ["PATH_INFO"] = path
        entity = endpoint_entity(path)
        key = None
        if entity and entity != "ZoneInformation":
            db = self.sim.store.database_for_user(environ.get("HTTP_USERNAME"))
            if db is not None:
                key = (db.ci, environ.get("HTTP_APIINTEGRATIONCODE", ""), entity)
                if not self.sim.gate.acquire(key):
                    msg = THREAD_MESSAGE.format(n=self.sim.gate.max_in_flight)
                    resp = Response(json.dumps({"errors": [msg]}), status=429, mimetype="application/json")
                    return resp(environ, start_response)
        try:
            return self.wsgi_app(environ, start_response)
        finally:
            if key is not None:
                self.sim.gate.release(key)


class AutotaskSim:
    """Holds the store, limits and config; the Flask app keeps it in extensions."""

    def __init__(self, sim_kit: kit.SimKit):
        self.kit = sim_kit
        self.config = dict(DEFAULT_CONFIG)
        self.store = Store(self.today)
        self.hourly = kit.SlidingWindowLimit(self.config["hourly_limit"], self.config["hourly_window_seconds"])
        self.gate = kit.ConcurrencyGate(self.config["thread_limit"])

    def today(self) -> dt.date:
        pinned = self.config.get("today")
        if pinned:
            return dt.date.fromisoformat(str(pinned)[:10])
        return dt.datetime.now(dt.timezone.utc).date()

    def set_config(self, changes: dict) -> dict:
        unknown = set(changes) - set(DEFAULT_CONFIG)
        if unknown:
            raise ValueError(f"unknown config keys: {sorted(unknown)}")
        new = {**self.config, **changes}
        for key in ("hourly_limit", "thread_limit", "max_records"):
            if int(new[key]) < 1:
                raise ValueError(f"{key} must be >= 1")
        if new["today"]:
            dt.date.fromisoformat(str(new["today"])[:10])
        self.config = new
        self.hourly.configure(int(new["hourly_limit"]), float(new["hourly_window_seconds"]))
        self.gate.max_in_flight = int(new["thread_limit"])
        return self.config


def _json_body():
    raw = flask.request.get_data(as_text=True)
    if not raw.strip():
        return None
    try:
        return json.loads(raw)
    except ValueError:
        flask.abort(400, "The request body is not valid JSON.")


def _errors(status: int, messages: list[str], headers: dict | None = None) -> flask.Response:
    resp = flask.make_response(flask.jsonify({"errors": messages}), status)
    for k, v in (headers or {}).items():
        resp.headers[k] = str(v)
    return resp


def _lower_keys(doc: dict) -> dict:
    return {str(k).lower(): v for k, v in doc.items()}


def _num(value: float):
    return int(value) if float(value).is_integer() else round(value, 3)


def create_app(seed: int = 0) -> flask.Flask:
    app = kit.make_app("autotask", seed=seed)
    sim_kit: kit.SimKit = app.extensions["sim"]
    sim_kit.error_body = lambda status, message: ({"errors": [message]}, {})
    sim = AutotaskSim(sim_kit)
    app.extensions["autotask"] = sim
    app.wsgi_app = _VendorMiddleware(app.wsgi_app, sim)

    # A query sent with POST is a read: keep it out of the kit's write log.
    record_write = sim_kit.record_write

    def _record_unless_read(method, path, body, status, dropped=False, tenant=None):
        if flask.has_request_context() and flask.g.get("autotask_read"):
            return None
        return record_write(method, path, body, status, dropped, tenant)
    sim_kit.record_write = _record_unless_read

    def base_url() -> str:
        return (sim.config.get("base_url") or flask.request.host_url).rstrip("/")

    def current_db():
        return flask.g.autotask_db

    # --- auth, hourly budget, threshold latency ---------------------------------------
    @app.before_request
    def _vendor_guard():
        path = flask.request.path
        if not path.startswith(PREFIX + "/") or path == PREFIX + "/ZoneInformation":
            return None
        h = flask.request.headers
        db = sim.store.authenticate(h.get("ApiIntegrationCode"), h.get("UserName"), h.get("Secret"))
        if db is None:
            return _errors(401, ["Unauthorized: ApiIntegrationCode, UserName and Secret headers must "
                                 "identify an API user."])
        flask.g.autotask_db = db
        if path == PREFIX + "/ThresholdInformation":
            return None  # reading the budget does not spend it
        allowed, remaining, reset = sim.hourly.hit(db.ci)
        if not allowed:
            limit = sim.hourly.limit
            return _errors(429, [f"The API request threshold of {limit} requests per "
                                 f"{_num(sim.hourly.window / 60)} minutes has been exceeded. "
                                 f"Requests are refused until the timeframe clears."],
                           {"Retry-After": max(1, math.ceil(reset))})
        used = (sim.hourly.limit - remaining) / sim.hourly.limit
        delay = (sim.config["latency_75_seconds"] if used >= 0.75
                 else sim.config["latency_50_seconds"] if used >= 0.5 else 0)
        if delay:
            time.sleep(float(delay))
        return None

    # --- zone and threshold -----------------------------------------------------------
    @app.get(PREFIX + "/ZoneInformation")
    def zone_information():
        user = next((v for k, v in flask.request.args.items() if k.lower() == "user"), None)
        if not user:
            return _errors(400, ["The user parameter is required."])
        db = sim.store.database_for_user(user)
        if db is None:
            return _errors(404, [f"Zone information could not be determined for user '{user}'."])
        return {"zoneName": db.zone_name, "url": base_url() + "/ATServicesRest/",
                "webUrl": db.web_url, "ci": db.ci}

    @app.get(PREFIX + "/ThresholdInformation")
    def threshold_information():
        used, _, _ = sim.hourly.peek(current_db().ci)
        return {"externalRequestThreshold": sim.hourly.limit,
                "requestThresholdTimeframe": _num(sim.hourly.window / 60),
                "currentTimeframeRequestCount": used}

    # --- queries ------------------------------------------------------------------------
    def _entity(name: str) -> str:
        if name not in ENTITIES:
            flask.abort(404, f"No resource was found that matches the entity '{name}'.")
        return name

    def _search_arg() -> dict:
        flask.g.autotask_read = True
        raw = flask.request.args.get("search")
        if raw is None:
            for k, v in flask.request.args.items():
                if k.lower() == "search":
                    raw = v
        if raw is not None:
            try:
                search = json.loads(raw)
            except ValueError:
                raise QueryError("The search parameter is not valid JSON.") from None
        elif flask.request.method == "POST":
            search = _json_body()
        else:
            raise QueryError("A query requires a search parameter.")
        if not isinstance(search, dict):
            raise QueryError("The query body must be a JSON object.")
        return search

    def _compile(entity: str, search: dict):
        if entity not in QUERYABLE:
            raise WriteError(405, f"The {entity} entity cannot be queried.")
        s = _lower_keys(search)
        fields = ENTITIES[entity]
        compiled = compile_filter(s.get("filter"), fields)
        include = resolve_include(s.get("includefields"), fields)
        max_records = s.get("maxrecords", sim.config["max_records"])
        ceiling = int(sim.config["max_records"])
        if not isinstance(max_records, int) or isinstance(max_records, bool) or not 1 <= max_records <= ceiling:
            raise QueryError(f"MaxRecords must be between 1 and {ceiling}.")
        return compiled, include, max_records

    def _page_url(entity: str, search: dict, paging: dict) -> str:
        q = urllib.parse.urlencode({"paging": json.dumps(paging, separators=(",", ":")),
                                    "search": json.dumps(search, separators=(",", ":"))})
        return f"{base_url()}{PREFIX}/{entity}/query/next?{q}"

    def _run(entity: str, search: dict, paging: dict | None) -> dict:
        compiled, include, size = _compile(entity, search)
        db = current_db()
        extra = {"userDefinedFields": []} if entity in UDF_ENTITIES else None
        paging = _lower_keys(paging or {})
        try:
            size = min(int(paging.get("pagesize") or size), int(sim.config["max_records"]))
            after, before = (None if paging.get(k) is None else int(paging[k]) for k in ("lastid", "beforeid"))
        except (TypeError, ValueError):
            raise QueryError("The paging parameter is not valid.") from None
        if size < 1:
            raise QueryError("The paging parameter is not valid.")
        with sim_kit.lock:
            if before is not None:
                window = collections.deque(maxlen=size + 1)
                for row in db.rows(entity, compiled):
                    if row["id"] >= before:
                        break
                    window.append(row)
                has_prev = len(window) > size
                page = list(window)[-size:]
                has_next = True
            else:
                page = []
                has_next = False
                for row in db.rows(entity, compiled, after):
                    if len(page) == size:
                        has_next = True
                        break
                    page.append(row)
                has_prev = after is not None
            items = [project(r, include, extra) for r in page]
        nxt = _page_url(entity, search, {"pageSize": size, "lastId": page[-1]["id"]}) if page and has_next else None
        prv = _page_url(entity, search, {"pageSize": size, "beforeId": page[0]["id"]}) if page and has_prev else None
        return {"items": items, "pageDetails": {"count": len(items), "requestCount": size,
                                                "prevPageUrl": prv, "nextPageUrl": nxt}}

    @app.route(PREFIX + "/<name>/query", methods=["GET", "POST"])
    def query(name):
        return _run(_entity(name), _search_arg(), None)

    @app.route(PREFIX + "/<name>/query/next", methods=["GET", "POST"])
    def query_next(name):
        entity = _entity(name)
        raw = flask.request.args.get("paging")
        try:
            paging = json.loads(raw) if raw else None
        except ValueError:
            paging = None
        if not isinstance(paging, dict):
            raise QueryError("The paging parameter is missing or not valid JSON.")
        return _run(entity, _search_arg(), paging)

    @app.route(PREFIX + "/<name>/query/count", methods=["GET", "POST"])
    def query_count(name):
        entity = _entity(name)
        compiled, _, _ = _compile(entity, _search_arg())
        with sim_kit.lock:
            n = sum(1 for _ in current_db().rows(entity, compiled))
        return {"queryCount": n}

    def _item(entity: str, rid: int, contract_id: int | None = None):
        if entity not in QUERYABLE:
            raise WriteError(405, f"The {entity} entity cannot be queried.")
        with sim_kit.lock:
            row = current_db().get_row(entity, rid)
            if row is not None and contract_id is not None and row.get("contractID") != contract_id:
                row = None
            extra = {"userDefinedFields": []} if entity in UDF_ENTITIES else None
            # the vendor answers 200 {"item": null} for an id that does not exist
            return {"item": project(row, None, extra) if row is not None else None}

    @app.get(PREFIX + "/<name>/<int:rid>")
    def get_item(name, rid):
        return _item(_entity(name), rid)

    @app.get(PREFIX + "/Contracts/<int:cid>/<child>/<int:rid>")
    def get_child_item(cid, child, rid):
        if child not in CHILDREN:
            flask.abort(404, f"No resource was found for Contracts/{cid}/{child}.")
        return _item(CHILDREN[child], rid, cid)

    # --- writes -------------------------------------------------------------------------
    TOP_CREATE = {"Companies", "Contracts", "Services", "ContractServiceAdjustments"}
    TOP_UPDATE = {"Companies", "Contracts", "Services"}
    CHILD_METHODS = {"ContractServices": {"POST", "PATCH", "PUT"},
                     "ContractServiceAdjustments": {"POST"},
                     "ContractCharges": {"POST", "PATCH", "PUT"}}

    def _write(entity: str, contract_id: int | None):
        body = _json_body()
        method = flask.request.method
        with sim_kit.lock:
            db = current_db()
            if method == "POST":
                rid = db.create(entity, body, contract_id)
            else:
                rid = db.update(entity, body, replace=(method == "PUT"), contract_id=contract_id)
        return {"itemId": rid}

    @app.route(PREFIX + "/<name>", methods=["POST", "PATCH", "PUT"])
    def write_top(name):
        entity = _entity(name)
        method = flask.request.method
        allowed = TOP_CREATE if method == "POST" else TOP_UPDATE
        if entity not in allowed:
            where = {"ContractServices": "Contracts/{id}/Services",
                     "ContractCharges": "Contracts/{id}/Charges"}.get(entity)
            hint = f" Use {where}." if where else ""
            raise WriteError(405, f"The {entity} entity does not support {method} here.{hint}")
        return _write(entity, None)

    @app.route(PREFIX + "/Contracts/<int:cid>/<child>", methods=["POST", "PATCH", "PUT"])
    def write_child(cid, child):
        entity = CHILDREN.get(child)
        if entity is None:
            flask.abort(404, f"No resource was found for Contracts/{cid}/{child}.")
        if flask.request.method not in CHILD_METHODS.get(entity, set()):
            raise WriteError(405, f"The {entity} entity does not support {flask.request.method}.")
        return _write(entity, cid)

    @app.delete(PREFIX + "/Contracts/<int:cid>/<child>/<int:rid>")
    def delete_child(cid, child, rid):
        if CHILDREN.get(child) != "ContractCharges":
            raise WriteError(405, f"Contracts/{cid}/{child} does not support DELETE.")
        with sim_kit.lock:
            current_db().delete("ContractCharges", rid, cid)
        return {"itemId": rid}

    @app.errorhandler(WriteError)
    def _write_error(exc: WriteError):
        return _errors(exc.status, exc.messages)

    @app.errorhandler(QueryError)
    def _query_error(exc: QueryError):
        return _errors(500, [str(exc)])

    # --- admin ----------------------------------------------------------------------------
    def _admin_body() -> dict:
        body = flask.request.get_json(silent=True)
        return body if isinstance(body, dict) else {}

    @app.post("/_sim/reset")
    def admin_reset():
        with sim_kit.lock:
            sim.store.reset()
            sim.hourly.reset()
            sim_kit.clear_faults()
            sim_kit.clear_writes()
            sim_kit.request_counts(reset=True)
        return {"reset": True}

    @app.post("/_sim/seed")
    def admin_seed():
        try:
            with sim_kit.lock:
                dbs = load_seed(sim.store, flask.request.get_json(silent=True) or {})
        except (ValueError, TypeError, KeyError, WriteError, QueryError) as exc:
            return {"error": str(exc)}, 400
        return {"databases": [{"ci": db.ci, "name": db.name, "credentials": db.credentials,
                               "counts": {e: len(t.rows) for e, t in db.tables.items()}} for db in dbs]}

    @app.post("/_sim/generate")
    def admin_generate():
        try:
            with sim_kit.lock:
                return generate(sim.store, _admin_body())
        except (ValueError, TypeError, KeyError, WriteError, QueryError) as exc:
            return {"error": str(exc)}, 400

    @app.get("/_sim/state")
    def admin_state():
        ci = flask.request.args.get("database", type=int)
        units = flask.request.args.get("units", "") in ("1", "true", "yes")
        with sim_kit.lock:
            dbs = [db for db in sim.store.databases if ci is None or db.ci == ci]
            return {"config": sim.config, "databases": [dump(db, units) for db in dbs]}

    @app.route("/_sim/config", methods=["GET", "POST"])
    def admin_config():
        if flask.request.method == "GET":
            return sim.config
        try:
            return sim.set_config(_admin_body())
        except (ValueError, TypeError) as exc:
            return {"error": str(exc)}, 400

    def _set_flag(entity: str, rid: int, changes: dict):
        ci = _admin_body().get("database") or flask.request.args.get("database", type=int)
        with sim_kit.lock:
            hit = sim.store.locate(entity, rid, ci)
            if hit is None:
                return {"error": f"{entity} {rid} not found"}, 404
            db, _ = hit
            return db.tables[entity].update(rid, changes)

    @app.post("/_sim/contracts/<int:rid>/deactivate")
    def admin_contract_off(rid):
        return _set_flag("Contracts", rid, {"status": 0})

    @app.post("/_sim/contracts/<int:rid>/activate")
    def admin_contract_on(rid):
        return _set_flag("Contracts", rid, {"status": 1})

    @app.post("/_sim/companies/<int:rid>/deactivate")
    def admin_company_off(rid):
        return _set_flag("Companies", rid, {"isActive": False})

    @app.post("/_sim/companies/<int:rid>/activate")
    def admin_company_on(rid):
        return _set_flag("Companies", rid, {"isActive": True})

    @app.post("/_sim/services/<int:rid>/deactivate")
    def admin_service_off(rid):
        return _set_flag("Services", rid, {"isActive": False})

    @app.post("/_sim/charges/<int:rid>/bill")
    def admin_charge_bill(rid):
        return _set_flag("ContractCharges", rid, {"isBilled": True})

    return app
