"""What every portal page of the billing screens shares: the page entrypoint (errors become a
friendly page, never a stack trace), who is looking, flash messages, RPC calls that report
problems as sentences, and small formatting filters for the templates."""
import base64
import dataclasses
import datetime as dt
import decimal
import json
import logging
import pathlib
import urllib.parse

import eventlet
from jinja2 import Environment, FileSystemLoader, select_autoescape
from marshmallow import ValidationError
from nameko.web.handlers import HttpRequestHandler
from werkzeug.wrappers import Response

from gateway import auth, directory
from gateway.api import remote
from gateway.errors import ApiError, BadRequest, Unauthorized, to_api_error
from gateway.portal import SECURITY_HEADERS, redirect

log = logging.getLogger(__name__)

FLASH_COOKIE = "idsync_flash"
PER_PAGE = 50
STATUSES = ("unmapped", "conflict", "suggested", "mapped", "ignored")  # the order a person works in
UNREACHABLE = ("RpcTimeout", "UnknownService", "MethodNotFound")
STATUS_LABELS = {"mapped": "Mapped", "suggested": "Suggested", "unmapped": "Unmapped", "ignored": "Ignored",
                 "conflict": "Conflict"}


# --- templates -----------------------------------------------------------------------------------
def _money(value):
    if value is None or value == "":
        return "—"
    try:
        return f"{decimal.Decimal(str(value)):,.2f}"
    except decimal.InvalidOperation:
        return str(value)


def _when(value):
    """An ISO timestamp as '2025-03-01 14:03 UTC' (dates stay dates)."""
    if not value:
        return "—"
    if isinstance(value, (dt.datetime, dt.date)):
        parsed = value
    else:
        try:
            parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            return str(value)
        if len(str(value)) <= 10:
            return str(value)
    if isinstance(parsed, dt.datetime):
        if parsed.tzinfo is not None:
            parsed = parsed.astimezone(dt.timezone.utc)
        return parsed.strftime("%Y-%m-%d %H:%M UTC")
    return parsed.isoformat()


def _score(value):
    """100.0 -> '100', 87.5 -> '87.5'."""
    try:
        return f"{float(value):g}"
    except (TypeError, ValueError):
        return str(value)


def _words(value):
    return str(value or "").replace("_", " ")


templates = Environment(loader=FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
                        autoescape=select_autoescape(["html"]))
templates.filters.update(money=_money, when=_when, words=_words, score=_score)
templates.globals.update(STATUSES=STATUSES, STATUS_LABELS=STATUS_LABELS)


# --- entrypoint ----------------------------------------------------------------------------------
class PageEntrypoint(HttpRequestHandler):
    """A portal page: whatever goes wrong, the person gets a page that says what, in words."""

    def __init__(self, method, url, **kwargs):
        kwargs.setdefault("expected_exceptions", (ApiError, ValidationError))
        super().__init__(method, url, **kwargs)

    def response_from_exception(self, exc):
        if isinstance(exc, Unauthorized):
            return redirect("/login")
        status, message = problem(exc)
        body = templates.get_template("error.html").render(status=status, message=message)
        return Response(body, status=status, mimetype="text/html", headers=SECURITY_HEADERS)


page_route = PageEntrypoint.decorator


def problem(exc):
    """(status, sentence) for any exception; internals go to the log, never to the page."""
    exc_type = getattr(exc, "exc_type", None)
    if exc_type in ("MethodNotFound", "UnknownService") or type(exc).__name__ in UNREACHABLE:
        return 503, "A backing service is not answering right now; please try again in a minute."
    if isinstance(exc, ValidationError):
        return 400, "Please check the form: " + _validation_text(exc.messages)
    status, body = to_api_error(exc)
    if status >= 500 and status != 503:
        log.error("portal page failed: %s: %s", type(exc).__name__, exc)
    return status, sentence(body.get("message") or "Something went wrong.")


def sentence(text):
    text = str(text).strip()
    if text and text[0].islower():
        text = text[0].upper() + text[1:]
    return text if text.endswith((".", "!", "?")) else text + "."


def _validation_text(messages):
    if isinstance(messages, dict):
        return "; ".join(f"{_words(k)}: {_validation_text(v)}" for k, v in messages.items())
    if isinstance(messages, list):
        return " ".join(str(m) for m in messages)
    return str(messages)


# --- who is looking, and what they may do --------------------------------------------------------
@dataclasses.dataclass
class View:
    principal: auth.Principal
    tenant: dict
    user: dict
    request: object
    flash: dict | None = None

    @property
    def can_bill(self):
        return self.principal.role in auth.CAPABILITIES["billing"]

    @property
    def is_admin(self):
        return self.principal.role in auth.CAPABILITIES["admin"]

    @property
    def actor(self):
        return self.user["email"]

    def url(self, **changes):
        """This page's URL with some query arguments changed (None removes one)."""
        args = {k: v for k, v in self.request.args.items()}
        for key, value in changes.items():
            if value in (None, ""):
                args.pop(key, None)
            else:
                args[key] = str(value)
        query = urllib.parse.urlencode(args)
        return self.request.path + ("?" + query if query else "")


class PortalSupport:
    """Helpers for the page handlers (mixed into the gateway service with the pages)."""

    def view(self, request, capability="read"):
        principal = self.caller.require(capability)
        with self.db.transaction() as session:
            tenant = directory.get_tenant(session, principal.tenant_id)
            user = directory.get_user(session, principal.tenant_id, principal.user_id)
        return View(principal, tenant, user, request, read_flash(request))

    def render(self, view, template, **context):
        html = templates.get_template(template).render(
            principal=view.principal, tenant=view.tenant, user=view.user, view=view, flash=view.flash,
            can_bill=view.can_bill, is_admin=view.is_admin, **context)
        response = Response(html, status=200, mimetype="text/html", headers=SECURITY_HEADERS)
        if view.flash:
            response.delete_cookie(FLASH_COOKIE, path="/")
        return response

    def call(self, method, *args, **kwargs):
        """An RPC with the gateway's deadline; errors arrive as ApiError with a readable message."""
        try:
            return remote(self.config, method, *args, **kwargs)
        except ApiError:
            raise
        except Exception as exc:  # remote errors, timeouts: keep the sentence, drop the trace
            status, message = problem(exc)
            error = ApiError(message)
            error.status = status
            raise error from None

    def attempt(self, method, *args, **kwargs):
        """(result, None) or (None, message): for reads a page can live without."""
        try:
            return self.call(method, *args, **kwargs), None
        except ApiError as exc:
            return None, sentence(exc.message)

    def gather(self, calls, seconds=None):
        """Run several RPCs at once: {name: (method, args, kwargs)} -> ({name: result}, [messages])."""
        seconds = float(seconds or self.config.get("RPC_TIMEOUT_SECONDS", 30))
        pending, results, errors = {}, {}, []
        for name, (method, args, kwargs) in calls.items():
            try:
                pending[name] = method.call_async(*args, **kwargs)
            except Exception as exc:
                results[name] = None
                errors.append(problem(exc)[1])
        for name, reply in pending.items():
            try:
                with eventlet.Timeout(seconds):
                    results[name] = reply.result()
            except eventlet.Timeout:
                results[name] = None
                errors.append(f"A backing service did not answer within {seconds:g}s.")
            except Exception as exc:
                results[name] = None
                errors.append(problem(exc)[1])
        return results, list(dict.fromkeys(errors))

    def done(self, request, default, message, kind="ok"):
        """Redirect-after-post to where the form came from, with a flash message."""
        response = redirect(back_to(request.form.get("back"), default))
        set_flash(response, kind, message)
        return response

    def act(self, request, default, action):
        """Run a form's action; its outcome (or the reason it failed) becomes the flash message."""
        try:
            message = action()
        except ApiError as exc:
            return self.done(request, default, sentence(exc.message), "error")
        except ValidationError as exc:
            return self.done(request, default, problem(exc)[1], "error")
        return self.done(request, default, message)


# --- flash messages, forms -----------------------------------------------------------------------
def set_flash(response, kind, text):
    payload = json.dumps({"kind": kind, "text": str(text)[:600]})
    value = base64.urlsafe_b64encode(payload.encode()).decode().rstrip("=")
    response.set_cookie(FLASH_COOKIE, value, max_age=120, path="/", httponly=True, samesite="Lax")


def read_flash(request):
    raw = request.cookies.get(FLASH_COOKIE)
    if not raw:
        return None
    try:
        data = json.loads(base64.urlsafe_b64decode(raw + "=" * (-len(raw) % 4)))
        if data.get("kind") in ("ok", "error") and isinstance(data.get("text"), str):
            return data
    except (ValueError, TypeError):
        pass
    return None


def back_to(value, default):
    """Only a path on this site (no scheme, no host): a form cannot redirect anyone elsewhere."""
    if not value or not value.startswith("/") or value.startswith("//") or "\\" in value:
        return default
    parts = urllib.parse.urlsplit(value)
    if parts.scheme or parts.netloc:
        return default
    return value


def page_number(request):
    try:
        return max(1, int(request.args.get("page", 1)))
    except ValueError:
        return 1


def text_arg(request, name, allowed=None):
    value = (request.args.get(name) or "").strip()[:200]
    if allowed is not None and value not in allowed:
        return ""
    return value


def required(form, name, label):
    value = (form.get(name) or "").strip()
    if not value:
        raise BadRequest(f"{label} is required.")
    return value


def optional(form, name):
    value = (form.get(name) or "").strip()
    return value or None
