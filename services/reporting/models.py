"""Reporting's read models, built only from events."""
from sqlalchemy import Column, DateTime, Integer, MetaData, PrimaryKeyConstraint, String, Table, func
from sqlalchemy.dialects.postgresql import JSONB

from common.tables import add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

# every event reporting has seen, for the activity feed and audits
event_journal = Table(
    "event_journal", metadata,
    Column("event_id", String(64), primary_key=True),
    Column("tenant_id", String(64), nullable=False, index=True),
    Column("source", String(40), nullable=False),
    Column("event_type", String(80), nullable=False),
    Column("occurred_at", String(40), nullable=False),
    Column("payload", JSONB, nullable=False),
    Column("recorded_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
)

customers = Table(
    "customers", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("name", String(300), nullable=False),
    Column("status", String(40), nullable=False),
    Column("changes_seen", Integer, nullable=False, server_default="1"),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "customer_id"),
)
