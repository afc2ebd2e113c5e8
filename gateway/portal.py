"""Server-rendered portal pages (Jinja2, autoescaped). Forms carry a CSRF token."""
import pathlib
import secrets

from jinja2 import Environment, FileSystemLoader, select_autoescape
from nameko.web.handlers import http
from werkzeug.wrappers import Response

from gateway import auth, directory, system
from gateway.errors import ApiError, Unauthorized

_templates = Environment(loader=FileSystemLoader(pathlib.Path(__file__).parent / "templates"),
                         autoescape=select_autoescape(["html"]))

SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; style-src 'self' 'unsafe-inline'; frame-ancestors 'none'",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "X-Frame-Options": "DENY",
}


def page(template, status=200, **context):
    return Response(_templates.get_template(template).render(**context), status=status,
                    mimetype="text/html", headers=SECURITY_HEADERS)


def redirect(location):
    return Response("", status=303, headers={"Location": location, **SECURITY_HEADERS})


def _secure(config):
    return str(config.get("COOKIE_SECURE", "false")).lower() in ("1", "true", "yes")


def set_session_cookie(response, token, config):
    response.set_cookie(auth.SESSION_COOKIE, token, httponly=True, samesite="Lax", secure=_secure(config),
                        path="/", max_age=int(config.get("SESSION_HOURS", 12)) * 3600)


class PortalPages:
    """Mixed into the gateway service class."""

    @http("GET", "/")
    def home(self, request):
        principal = self.caller.current()
        if principal is None:
            return redirect("/login")
        with self.db.transaction() as session:
            tenant = directory.get_tenant(session, principal.tenant_id)
            user = directory.get_user(session, principal.tenant_id, principal.user_id)
        attention, problems = self.needs_attention(tenant)
        return page("home.html", tenant=tenant, user=user, principal=principal, health=system.health_of_all(),
                    attention=attention, attention_problems=problems)

    @http("GET", "/login")
    def login_page(self, request):
        return self._login_form()

    @http("POST", "/login")
    def login_submit(self, request):
        # before sign-in there is no session: double-submit cookie guards the form
        if not auth.same(request.form.get("csrf_token"), request.cookies.get(auth.CSRF_COOKIE)):
            return self._login_form("Your form expired; please try again.", status=400)
        try:
            with self.db.transaction() as session:
                user = auth.authenticate_password(session, request.form.get("email", ""),
                                                  request.form.get("password", ""))
                token, _ = auth.open_session(session, user, int(self.config.get("SESSION_HOURS", 12)))
        except Unauthorized as exc:
            return self._login_form(exc.message, status=401)
        response = redirect("/")
        set_session_cookie(response, token, self.config)
        response.delete_cookie(auth.CSRF_COOKIE)
        return response

    @http("POST", "/logout")
    def logout(self, request):
        try:
            self.caller.current()  # CSRF check for the signed-in session
        except ApiError:
            return redirect("/login")
        with self.db.transaction() as session:
            auth.close_session(session, request.cookies.get(auth.SESSION_COOKIE))
        response = redirect("/login")
        response.delete_cookie(auth.SESSION_COOKIE)
        return response

    def _login_form(self, error=None, status=200):
        csrf = secrets.token_urlsafe(24)
        response = page("login.html", status=status, error=error, csrf_token=csrf)
        response.set_cookie(auth.CSRF_COOKIE, csrf, httponly=True, samesite="Strict", secure=_secure(self.config),
                            path="/login")
        return response
