"""The marketplace service's schema: tenants' marketplace snapshots."""
from sqlalchemy import Column, DateTime, MetaData, PrimaryKeyConstraint, String, Table, func
from sqlalchemy.dialects.postgresql import JSONB

from common.tables import add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

customers = Table(
    "customers", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("name", String(300), nullable=False),
    Column("status", String(40), nullable=False),
    Column("domain", String(255), nullable=True),
    Column("raw", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "customer_id"),
)
