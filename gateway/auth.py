"""Who is calling: portal sessions (cookie) and API tokens (bearer), both scoped to one tenant."""
import dataclasses
import datetime as dt
import hashlib
import hmac
import secrets
import uuid

import eventlet.patcher
import eventlet.tpool
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from sqlalchemy import select, update

from gateway.errors import Forbidden, Unauthorized
from gateway.models import api_tokens, sessions, users

ROLES = ("admin", "billing", "viewer")
# what each role may do; a route names the capability it needs
CAPABILITIES = {
    "read": {"admin", "billing", "viewer"},
    "billing": {"admin", "billing"},  # mapping, approvals, retries
    "admin": {"admin"},  # settings, credentials, users, tokens
}
SESSION_COOKIE = "idsync_session"
CSRF_COOKIE = "idsync_csrf"
TOKEN_PREFIX = "idsk_"

_hasher = PasswordHasher()  # argon2id with the library's current recommended parameters
_DUMMY_HASH = _hasher.hash("timing-equaliser")


@dataclasses.dataclass(frozen=True)
class Principal:
    user_id: str
    tenant_id: str
    role: str
    via: str  # "session" | "token"
    csrf_token: str | None = None

    def require(self, capability):
        if self.role not in CAPABILITIES[capability]:
            raise Forbidden(f"your role ({self.role}) may not do this")


def _off_the_hub(fn, *args):
    """argon2 spends ~50 ms of CPU on purpose. On the eventlet hub that stalls every request the
    gateway serves (a burst of sign-ins stalled the mapping lists for seconds): in the green
    gateway it runs in eventlet's thread pool (argon2-cffi releases the GIL while it hashes)."""
    if eventlet.patcher.is_monkey_patched("thread"):
        return eventlet.tpool.execute(fn, *args)
    return fn(*args)


def hash_password(password):
    return _off_the_hub(_hasher.hash, password)


def _verify(password_hash, password):
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_password(password_hash, password):
    return _off_the_hub(_verify, password_hash, password)


def digest(value):
    return hashlib.sha256(value.encode()).hexdigest()


def now():
    return dt.datetime.now(dt.timezone.utc)


def authenticate_password(session, email, password):
    row = session.execute(select(users).where(users.c.email == email.strip().lower())).first()
    if row is None or not row.active:
        check_password(_DUMMY_HASH, password)  # same work either way: no user enumeration by timing
        raise Unauthorized("wrong e-mail or password")
    if not check_password(row.password_hash, password):
        raise Unauthorized("wrong e-mail or password")
    return row


def open_session(session, user, hours):
    token = secrets.token_urlsafe(32)
    csrf = secrets.token_urlsafe(24)
    session.execute(sessions.insert().values(token_hash=digest(token), user_id=user.id, tenant_id=user.tenant_id,
                                             csrf_token=csrf, expires_at=now() + dt.timedelta(hours=hours)))
    return token, csrf


def close_session(session, token):
    if token:
        session.execute(sessions.delete().where(sessions.c.token_hash == digest(token)))


def principal_from_session(session, token):
    row = session.execute(
        select(sessions.c.user_id, sessions.c.tenant_id, sessions.c.csrf_token, sessions.c.expires_at,
               users.c.role, users.c.active)
        .join(users, users.c.id == sessions.c.user_id)
        .where(sessions.c.token_hash == digest(token))).first()
    if row is None or not row.active or row.expires_at < now():
        return None
    return Principal(row.user_id, row.tenant_id, row.role, "session", row.csrf_token)


def issue_api_token(session, principal, name, role):
    if role not in ROLES:
        raise ValueError(role)
    # a token never has more power than the person who made it
    if ROLES.index(role) < ROLES.index(principal.role):
        raise Forbidden("a token cannot have a stronger role than yours")
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    token_id = str(uuid.uuid4())
    session.execute(api_tokens.insert().values(id=token_id, tenant_id=principal.tenant_id,
                                               user_id=principal.user_id, name=name, role=role,
                                               token_hash=digest(token)))
    return token_id, token


def principal_from_token(session, token):
    row = session.execute(select(api_tokens).where(api_tokens.c.token_hash == digest(token))).first()
    if row is None or row.revoked_at is not None:
        return None
    session.execute(update(api_tokens).where(api_tokens.c.id == row.id).values(last_used_at=now()))
    return Principal(row.user_id, row.tenant_id, row.role, "token")


def same(a, b):
    return bool(a) and bool(b) and hmac.compare_digest(str(a), str(b))
