"""The marketplace service's schema: tenants' marketplace snapshots, sync runs, quarantined records.

Every primary key and index starts with tenant_id: every query of a tenant's data names it.
Money is Numeric(18, 4): the vendor sends two-decimal amounts today, but unit costs and
per-unit prices of usage products can carry sub-cent digits, and billing-rules.md rounds to
cents only at the very end (after multiplying by quantity and applying markups). Four places
keep those digits exactly (no float), 14 integer digits are far beyond any invoice, and
domain.money() quantizes before comparing so a value never "changes" by being stored.
"""
from sqlalchemy import (BigInteger, Column, DateTime, Float, Identity, Index, Integer, MetaData, Numeric,
                        PrimaryKeyConstraint, String, Table, Text, func, text)
from sqlalchemy.dialects.postgresql import JSONB

from common.tables import add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

MONEY = Numeric(18, 4)

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

# The marketplace catalog as the tenant sees it, keyed by MPN (what lines and mappings use).
products = Table(
    "products", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("product_id", String(64), nullable=False),
    Column("name", String(300), nullable=False),
    Column("vendor", String(200), nullable=True),
    Column("service_name", String(200), nullable=True),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("billing_period", String(20), nullable=True),  # ISO 8601 duration: P1M, P1Y
    Column("billing_model", String(40), nullable=True),
    Column("raw", JSONB, nullable=False),
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "mpn"),
)

# One row per marketplace subscription: its summary and how far our snapshot got.
subscriptions = Table(
    "subscriptions", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("status", String(20), nullable=False),
    Column("renewal_status", String(40), nullable=True),
    Column("creation_date", DateTime(timezone=True), nullable=True),
    Column("renewal_date", DateTime(timezone=True), nullable=True),
    # the vendor's lastModifiedDate of the detail we applied: written only with the lines, so an
    # interrupted run fetches the subscription again next time
    Column("last_modified", DateTime(timezone=True), nullable=True),
    Column("total_price", MONEY, nullable=True),
    Column("detail_fetched_at", DateTime(timezone=True), nullable=True),  # resumes a throttled full run
    Column("unlisted_at", DateTime(timezone=True), nullable=True),  # absent from a complete listing
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "subscription_id"),
)

# The billing unit: (subscription, MPN).
subscription_lines = Table(
    "subscription_lines", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("name", String(300), nullable=True),
    Column("quantity", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("renewal_date", DateTime(timezone=True), nullable=True),
    Column("line_version", Integer, nullable=False),
    Column("seen_at", DateTime(timezone=True), nullable=False),  # when the last change was seen
    Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    PrimaryKeyConstraint("tenant_id", "subscription_id", "mpn"),
    Index("ix_subscription_lines_tenant_customer", "tenant_id", "customer_id"),
    Index("ix_subscription_lines_tenant_mpn", "tenant_id", "mpn"),
)

# outcome: queued -> running -> ok | partial | failed | throttled
sync_runs = Table(
    "sync_runs", metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),  # incremental | full
    Column("trigger", String(20), nullable=False, server_default="manual"),  # manual|schedule|nightly|resume
    Column("outcome", String(20), nullable=False),
    Column("queued_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("started_at", DateTime(timezone=True), nullable=True),
    Column("finished_at", DateTime(timezone=True), nullable=True),
    Column("heartbeat_at", DateTime(timezone=True), nullable=True),
    # a full run skips subscriptions whose detail was fetched since this instant (resumed full runs)
    Column("full_since", DateTime(timezone=True), nullable=True),
    Column("worker", String(120), nullable=True),
    Column("counts", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("error", Text, nullable=True),
    Column("retry_after", Float, nullable=True),  # seconds the vendor asked us to wait (throttled)
    PrimaryKeyConstraint("tenant_id", "id"),
    # at most one queued and one running run per tenant, whatever the number of replicas
    Index("ux_sync_runs_tenant_queued", "tenant_id", unique=True, postgresql_where=text("outcome = 'queued'")),
    Index("ux_sync_runs_tenant_running", "tenant_id", unique=True, postgresql_where=text("outcome = 'running'")),
    Index("ix_sync_runs_tenant_queued_at", "tenant_id", "queued_at"),
)

quarantine = Table(
    "quarantine", metadata,
    Column("id", BigInteger, Identity(), nullable=False),
    Column("tenant_id", String(64), nullable=False),
    Column("run_id", BigInteger, nullable=True),  # the last run that refused the record
    Column("record_type", String(20), nullable=False),  # customer | product | subscription
    Column("record_id", String(120), nullable=False),
    Column("field", String(200), nullable=True),
    Column("reason", Text, nullable=False),
    Column("payload", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
    Column("occurrences", Integer, nullable=False, server_default=text("1")),
    Column("first_seen", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("last_seen", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("resolved_at", DateTime(timezone=True), nullable=True),
    PrimaryKeyConstraint("tenant_id", "id"),
    Index("ux_quarantine_open_record", "tenant_id", "record_type", "record_id", unique=True,
          postgresql_where=text("resolved_at IS NULL")),
    Index("ix_quarantine_tenant_last_seen", "tenant_id", "last_seen"),
)
