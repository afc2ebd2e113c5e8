"""The posting tables a PSA service adds to its own schema (one call in its models.py).

    from common.posting.tables import posting_tables
    posting = posting_tables(metadata)     # .groups, .ledger, .budget

- posting_groups: one row per (tenant, PSA contract, PSA service): the desired schedule, whether it
  needs work (due_at), who works on it (lease), what we believe the PSA shows (expected).
- postings: the ledger, one row per planned operation, unique idempotency_key.
- request_budget: per-minute request counts per tenant, summed over the rolling hour by every
  replica (common.posting.budget).
- posting_reconciliations: per tenant, the day its nightly PSA re-read last started and how many
  contract lines it sent round (common.posting.reconcile).
"""
from dataclasses import dataclass

from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Index, Integer, MetaData, Numeric,
                        PrimaryKeyConstraint, String, Table, Text, func, text)
from sqlalchemy.dialects.postgresql import JSONB


@dataclass(frozen=True)
class PostingTables:
    groups: Table
    ledger: Table
    budget: Table
    reconciliations: Table


def groups_table(metadata: MetaData) -> Table:
    return Table(
        "posting_groups", metadata,
        Column("tenant_id", String(64), nullable=False),
        Column("contract_id", String(64), nullable=False),
        Column("service_id", String(64), nullable=False),
        Column("company_id", String(64), nullable=True),
        Column("desired", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
        Column("desired_version", BigInteger, nullable=False, server_default=text("0")),
        Column("pending_from", Date, nullable=True),
        Column("seq", BigInteger, nullable=False, server_default=text("0")),
        Column("claimed_seq", BigInteger, nullable=True),
        Column("due_at", DateTime(timezone=True), nullable=True),
        Column("lease_owner", String(120), nullable=True),
        Column("lease_until", DateTime(timezone=True), nullable=True),
        Column("status", String(20), nullable=False, server_default="pending"),
        Column("status_message", Text, nullable=True),
        Column("expected", JSONB, nullable=True),
        Column("posted_horizon", Date, nullable=True),
        Column("edit_round", Integer, nullable=False, server_default=text("0")),
        Column("overwrite_once", Boolean, nullable=False, server_default=text("false")),
        Column("failures", Integer, nullable=False, server_default=text("0")),
        Column("changed_at", DateTime(timezone=True), nullable=True),
        Column("touched_at", DateTime(timezone=True), nullable=True),   # last new desired state / retry
        Column("last_posted_at", DateTime(timezone=True), nullable=True),
        Column("vendor_line_id", String(64), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        PrimaryKeyConstraint("tenant_id", "contract_id", "service_id"),
        Index("ix_posting_groups_due", "due_at", postgresql_where=text("due_at IS NOT NULL")),
        Index("ix_posting_groups_tenant_status", "tenant_id", "status"),
    )


def ledger_table(metadata: MetaData) -> Table:
    return Table(
        "postings", metadata,
        Column("id", BigInteger, primary_key=True, autoincrement=True),
        Column("tenant_id", String(64), nullable=False),
        Column("contract_id", String(64), nullable=False),
        Column("service_id", String(64), nullable=False),
        Column("idempotency_key", String(64), nullable=False, unique=True),
        Column("operation", String(30), nullable=False),
        Column("state", String(20), nullable=False),
        Column("effective_date", Date, nullable=False),
        Column("quantity_before", Integer, nullable=True),
        Column("quantity_after", Integer, nullable=True),
        Column("unit_change", Integer, nullable=True),
        Column("unit_price", Numeric(14, 4), nullable=True),
        Column("unit_cost", Numeric(14, 4), nullable=True),
        Column("desired_version", BigInteger, nullable=False),
        Column("params", JSONB, nullable=False, server_default=text("'{}'::jsonb")),
        Column("attempts", Integer, nullable=False, server_default=text("0")),
        Column("vendor_item_id", String(64), nullable=True),
        Column("vendor_message", Text, nullable=True),
        Column("outcome_unknown", Boolean, nullable=False, server_default=text("false")),
        Column("next_attempt_at", DateTime(timezone=True), nullable=True),
        Column("created_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("updated_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("sent_at", DateTime(timezone=True), nullable=True),
        Column("posted_at", DateTime(timezone=True), nullable=True),
        Index("ix_postings_tenant_state", "tenant_id", "state"),
        Index("ix_postings_line", "tenant_id", "contract_id", "service_id"),
    )


def budget_table(metadata: MetaData) -> Table:
    return Table(
        "request_budget", metadata,
        Column("tenant_id", String(64), nullable=False),
        Column("psa", String(20), nullable=False),
        Column("minute", DateTime(timezone=True), nullable=False),
        Column("used", Integer, nullable=False, server_default=text("0")),
        PrimaryKeyConstraint("tenant_id", "psa", "minute"),
    )


def reconciliations_table(metadata: MetaData) -> Table:
    return Table(
        "posting_reconciliations", metadata,
        Column("tenant_id", String(64), primary_key=True),
        Column("run_on", Date, nullable=False),
        Column("started_at", DateTime(timezone=True), nullable=False, server_default=func.now()),
        Column("trigger", String(20), nullable=False),   # nightly | manual
        Column("lines", Integer, nullable=False, server_default=text("0")),
    )


def posting_tables(metadata: MetaData) -> PostingTables:
    return PostingTables(groups_table(metadata), ledger_table(metadata), budget_table(metadata),
                         reconciliations_table(metadata))
