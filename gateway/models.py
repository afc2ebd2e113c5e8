"""The gateway's schema: tenants, users, sessions, API tokens and encrypted vendor credentials."""
from sqlalchemy import (Boolean, Column, DateTime, ForeignKey, MetaData, PrimaryKeyConstraint, String, Table,
                        Text, func)
from sqlalchemy.dialects.postgresql import JSONB

metadata = MetaData()

tenants = Table(
    "tenants", metadata,
    Column("id", String(64), primary_key=True),
    Column("name", String(200), nullable=False),
    Column("psa", String(20), nullable=False),  # autotask | connectwise
    Column("settings", JSONB, nullable=False, server_default="{}"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

users = Table(
    "users", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("email", String(320), nullable=False, unique=True),
    Column("name", String(200), nullable=False),
    Column("password_hash", Text, nullable=False),  # argon2id
    Column("role", String(20), nullable=False),  # admin | billing | viewer
    Column("active", Boolean, nullable=False, server_default="true"),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

sessions = Table(
    "sessions", metadata,
    Column("token_hash", String(64), primary_key=True),  # sha256 of the cookie value: a DB leak gives no session
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False, index=True),
    Column("tenant_id", String(64), nullable=False),
    Column("csrf_token", String(64), nullable=False),
    Column("expires_at", DateTime(timezone=True), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

api_tokens = Table(
    "api_tokens", metadata,
    Column("id", String(64), primary_key=True),
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False, index=True),
    Column("user_id", String(64), ForeignKey("users.id"), nullable=False),
    Column("name", String(200), nullable=False),
    Column("token_hash", String(64), nullable=False, unique=True),
    Column("role", String(20), nullable=False),
    Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_used_at", DateTime(timezone=True), nullable=True),
    Column("revoked_at", DateTime(timezone=True), nullable=True),
)

credentials = Table(
    "credentials", metadata,
    Column("tenant_id", String(64), ForeignKey("tenants.id"), nullable=False),
    Column("kind", String(20), nullable=False),  # marketplace | autotask | connectwise
    Column("ciphertext", Text, nullable=False),  # Fernet token of the JSON document
    Column("summary", JSONB, nullable=False),  # what may be shown back: non-secret fields, masked secrets
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "kind"),
)
