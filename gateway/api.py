"""The gateway's HTTP entrypoint: JSON errors from one table, caller identity, the OpenAPI registry."""
import datetime as dt
import decimal
import json
import logging

import eventlet

from marshmallow import ValidationError
from nameko.extensions import DependencyProvider
from nameko.web.handlers import HttpRequestHandler
from werkzeug.wrappers import Response

from gateway import auth
from gateway.errors import ApiError, BadRequest, Forbidden, Unauthorized, Unavailable, to_api_error

log = logging.getLogger(__name__)

# (method, url, doc) of every documented route, collected at import for /api/openapi.json
ROUTES = []
UNSAFE = {"POST", "PUT", "PATCH", "DELETE"}


def _default(value):
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    raise TypeError(type(value).__name__)


def json_response(data, status=200, headers=None):
    return Response(json.dumps(data, default=_default), status=status, headers=headers,
                    mimetype="application/json")


def read_json(request, schema=None):
    if request.mimetype != "application/json":
        raise BadRequest("send the body as application/json")
    try:
        data = json.loads(request.get_data(as_text=True) or "null")
    except ValueError:
        raise BadRequest("the body is not valid JSON") from None
    if schema is None:
        return data
    if not isinstance(data, dict):
        raise BadRequest("the body must be a JSON object")
    return schema.load(data)


class ApiEntrypoint(HttpRequestHandler):
    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("expected_exceptions", (ApiError, ValidationError))
        super().__init__(method, url, **kwargs)

    def response_from_exception(self, exc):
        status, body = to_api_error(exc)
        if status >= 500:
            log.error("request failed: %s: %s", type(exc).__name__, exc)
        return json_response(body, status=status)

    def response_from_result(self, result):
        if isinstance(result, Response):
            return result
        return json_response(result)


def route(method, url, summary="", capability="read", tags=("api",), body=None, response=None, public=False):
    """Declare an HTTP route and its OpenAPI entry in one place."""
    ROUTES.append({"method": method, "url": url, "summary": summary, "capability": None if public else capability,
                   "tags": list(tags), "body": body, "response": response})
    return ApiEntrypoint.decorator(method, url)


class Caller(DependencyProvider):
    """`self.caller.require("billing")` -> Principal, checked against session or bearer token and CSRF."""

    def setup(self):
        self.session_hours = int(self.container.config.get("SESSION_HOURS", 12))

    def get_dependency(self, worker_ctx):
        request = worker_ctx.args[0] if worker_ctx.args else None
        store = None
        for dep in self.container.dependencies:
            if getattr(dep, "attr_name", None) == "db":
                store = dep.store
        return CallerContext(request, store)


class CallerContext:
    def __init__(self, request, store):
        self.request = request
        self.store = store
        self._principal = None

    def current(self):
        """The principal, or None when nobody is signed in."""
        if self._principal is not None:
            return self._principal
        request = self.request
        header = request.headers.get("Authorization", "")
        with self.store.transaction() as session:
            if header.startswith("Bearer "):
                principal = auth.principal_from_token(session, header[7:].strip())
                if principal is None:
                    raise Unauthorized("the API token is unknown or revoked")
            else:
                token = request.cookies.get(auth.SESSION_COOKIE)
                principal = auth.principal_from_session(session, token) if token else None
        if principal and principal.via == "session" and request.method in UNSAFE:
            sent = request.headers.get("X-CSRF-Token") or request.form.get("csrf_token")
            if not auth.same(sent, principal.csrf_token):
                raise Forbidden("missing or wrong CSRF token")
        self._principal = principal
        return principal

    def require(self, capability="read"):
        principal = self.current()
        if principal is None:
            raise Unauthorized("sign in or send an API token")
        principal.require(capability)
        return principal


def remote(config, method, *args, **kwargs):
    """Call a service over RPC with a deadline: a stuck service answers 503, not a hung request."""
    seconds = float(config.get("RPC_TIMEOUT_SECONDS", 30))
    try:
        with eventlet.Timeout(seconds):
            return method(*args, **kwargs)
    except eventlet.Timeout:
        raise Unavailable(f"a backing service did not answer within {seconds:g}s") from None


def query_args(request, *names, **defaults):
    """Query-string values by name (only the ones given), with defaults."""
    out = dict(defaults)
    for name in names:
        if name in request.args:
            out[name] = request.args[name]
    return out


def flag(value):
    return str(value).lower() in ("1", "true", "yes", "on")
