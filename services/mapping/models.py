"""The mapping service's schema (`mapping`). Every table has tenant_id first in its primary key and
indexes: every query is one tenant's.

- copies of marketplace state from events: customers, products, lines (current state, with
  line_version to drop stale events) and line_states (every state seen, for day-by-day replay);
- the three mapping screens: customer_mappings, product_mappings (+ price_overrides), line_links;
- psa_references: the tenant's PSA companies, contracts and services (refreshed from the PSA service);
- billing_settings; desired_lines (what each PSA contract line should say, with the timeline of
  what was sent); approvals; mapping_audit (who decided what, when).
"""
from sqlalchemy import (BigInteger, Boolean, Column, Date, DateTime, Identity, Index, Integer, MetaData,
                        Numeric, PrimaryKeyConstraint, String, Table, Text, false, func, text)
from sqlalchemy.dialects.postgresql import JSONB

from common.tables import add_messaging_tables

metadata = MetaData()
outbox, processed_events = add_messaging_tables(metadata)

MONEY = Numeric(18, 4)
PERCENT = Numeric(9, 4)
SCORE = Numeric(5, 1)


def _stamp(name="updated_at"):
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def _decision_columns():
    """What every mapping item carries: its status, the suggestion behind it, who decided."""
    return [
        Column("status", String(20), nullable=False, server_default="unmapped"),
        Column("score", SCORE, nullable=True),
        Column("method", String(30), nullable=True),   # exact_name|domain|identifier|fuzzy_name|only_contract|manual
        Column("reason", Text, nullable=True),         # why unmapped / why in conflict
        Column("decided_by", String(320), nullable=True),  # a person's e-mail; NULL = automatic
        Column("decided_at", DateTime(timezone=True), nullable=True),
        _stamp(),
    ]


# --- copies of marketplace state -----------------------------------------------------------------
customers = Table(
    "customers", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("name", String(300), nullable=False),
    Column("domain", String(255), nullable=True),
    Column("status", String(40), nullable=False, server_default="active"),
    # a line arrived before its customer_changed: the name is the id until the customer arrives
    Column("placeholder", Boolean, nullable=False, server_default=false()),
    _stamp(),
    PrimaryKeyConstraint("tenant_id", "customer_id"),
)
Index("ix_customers_tenant_lower_name", customers.c.tenant_id, func.lower(customers.c.name))

products = Table(
    "products", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("name", String(300), nullable=False),
    Column("vendor", String(200), nullable=True),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("billing_period", String(40), nullable=True),
    Column("placeholder", Boolean, nullable=False, server_default=false()),
    _stamp(),
    PrimaryKeyConstraint("tenant_id", "mpn"),
)
Index("ix_products_tenant_lower_name", products.c.tenant_id, func.lower(products.c.name))

lines = Table(
    "lines", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("line_version", Integer, nullable=False),
    Column("change", String(20), nullable=True),
    # the PSA contract line whose sent state counts this line, and the line_version it counted
    Column("billed_contract_id", String(64), nullable=True),
    Column("billed_service_id", String(64), nullable=True),
    Column("billed_version", Integer, nullable=True),
    # a line that (re-)enters a contract line after it was billed elsewhere (or left billing) starts
    # afresh there: its state at rebase_version counts as seen at rebased_at (planner.replay_states)
    Column("rebase_contract_id", String(64), nullable=True),
    Column("rebase_service_id", String(64), nullable=True),
    Column("rebase_version", Integer, nullable=True),
    Column("rebased_at", DateTime(timezone=True), nullable=True),
    _stamp(),
    PrimaryKeyConstraint("tenant_id", "subscription_id", "mpn"),
)
Index("ix_lines_tenant_customer", lines.c.tenant_id, lines.c.customer_id)
Index("ix_lines_tenant_mpn", lines.c.tenant_id, lines.c.mpn)
Index("ix_lines_tenant_billed", lines.c.tenant_id, lines.c.billed_contract_id, lines.c.billed_service_id)

line_states = Table(
    "line_states", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("line_version", Integer, nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("quantity", Integer, nullable=False),
    Column("status", String(20), nullable=False),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("currency", String(3), nullable=False, server_default="USD"),
    Column("seen_at", DateTime(timezone=True), nullable=False),
    Column("event_id", String(64), nullable=True),
    _stamp("received_at"),
    PrimaryKeyConstraint("tenant_id", "subscription_id", "mpn", "line_version"),
)

# --- mappings ------------------------------------------------------------------------------------
customer_mappings = Table(
    "customer_mappings", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("psa_company_id", String(64), nullable=True),
    *_decision_columns(),
    PrimaryKeyConstraint("tenant_id", "customer_id"),
)
Index("ix_customer_mappings_tenant_status", customer_mappings.c.tenant_id, customer_mappings.c.status)
Index("ix_customer_mappings_tenant_company", customer_mappings.c.tenant_id, customer_mappings.c.psa_company_id)

product_mappings = Table(
    "product_mappings", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("psa_service_id", String(64), nullable=True),
    Column("price_rule", String(20), nullable=True),
    Column("markup_pct", PERCENT, nullable=True),
    Column("fixed_price", MONEY, nullable=True),
    *_decision_columns(),
    PrimaryKeyConstraint("tenant_id", "mpn"),
)
Index("ix_product_mappings_tenant_status", product_mappings.c.tenant_id, product_mappings.c.status)
Index("ix_product_mappings_tenant_service", product_mappings.c.tenant_id, product_mappings.c.psa_service_id)

price_overrides = Table(
    "price_overrides", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("customer_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("price_rule", String(20), nullable=False),
    Column("markup_pct", PERCENT, nullable=True),
    Column("fixed_price", MONEY, nullable=True),
    Column("decided_by", String(320), nullable=True),
    _stamp(),
    PrimaryKeyConstraint("tenant_id", "customer_id", "mpn"),
)

line_links = Table(
    "line_links", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("subscription_id", String(64), nullable=False),
    Column("mpn", String(120), nullable=False),
    Column("psa_contract_id", String(64), nullable=True),
    *_decision_columns(),
    PrimaryKeyConstraint("tenant_id", "subscription_id", "mpn"),
)
Index("ix_line_links_tenant_status", line_links.c.tenant_id, line_links.c.status)
Index("ix_line_links_tenant_contract", line_links.c.tenant_id, line_links.c.psa_contract_id)

# --- PSA reference cache -------------------------------------------------------------------------
psa_references = Table(
    "psa_references", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),       # company | contract | service
    Column("psa_id", String(64), nullable=False),
    Column("psa", String(20), nullable=False),
    Column("name", String(300), nullable=False),
    Column("active", Boolean, nullable=False),
    Column("company_id", String(64), nullable=True),  # contracts
    Column("recurring", Boolean, nullable=False, server_default=text("true")),
    Column("start_date", Date, nullable=True),        # contracts: anchors the billing periods
    Column("period_months", Integer, nullable=False, server_default=text("1")),
    Column("billing_cycle", String(40), nullable=True),
    Column("unit_price", MONEY, nullable=True),       # services: the PSA catalog price
    Column("unit_cost", MONEY, nullable=True),
    Column("identifier", String(200), nullable=True),
    Column("domains", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    _stamp("refreshed_at"),
    PrimaryKeyConstraint("tenant_id", "kind", "psa_id"),
)
Index("ix_psa_references_tenant_kind_name", psa_references.c.tenant_id, psa_references.c.kind,
      func.lower(psa_references.c.name))
Index("ix_psa_references_tenant_kind_company", psa_references.c.tenant_id, psa_references.c.kind,
      psa_references.c.company_id)

# --- settings, desired state, approvals, audit ---------------------------------------------------
billing_settings = Table(
    "billing_settings", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("psa", String(20), nullable=True),          # from the gateway's tenant profile on first use
    Column("posting_mode", String(20), nullable=False, server_default="auto"),
    Column("threshold_units", Integer, nullable=True),
    Column("threshold_percent", PERCENT, nullable=True),
    Column("bill_suspended", Boolean, nullable=False, server_default=false()),
    Column("credit_decreases_immediately", Boolean, nullable=False, server_default=false()),
    Column("edited_in_psa", String(20), nullable=False, server_default="hold"),
    Column("references_refreshed_at", DateTime(timezone=True), nullable=True),
    Column("refresh_requested_at", DateTime(timezone=True), nullable=True),
    Column("refresh_attempted_at", DateTime(timezone=True), nullable=True),
    Column("refresh_error", Text, nullable=True),
    Column("updated_by", String(320), nullable=True),
    _stamp(),
    PrimaryKeyConstraint("tenant_id"),
)

desired_lines = Table(
    "desired_lines", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("psa_contract_id", String(64), nullable=False),
    Column("psa_service_id", String(64), nullable=False),
    Column("company_id", String(64), nullable=True),
    # the desired state as planned (the last checkpoint of the timeline)
    Column("quantity", Integer, nullable=True),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("currency", String(3), nullable=True),
    Column("lines", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # the last event sent: its effective date and desired_version (monotonic per group)
    Column("effective_date", Date, nullable=True),
    Column("version", Integer, nullable=False, server_default=text("0")),
    Column("emitted_at", DateTime(timezone=True), nullable=True),
    # ok | awaiting_approval | conflict | idle (no billable line left: nothing is sent, D9)
    Column("status", String(20), nullable=False, server_default="ok"),
    Column("reasons", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    # day-by-day checkpoints of the plan (see planner.py), and what came before the kept ones
    Column("timeline", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("origin", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("timeline_rev", Integer, nullable=False, server_default=text("0")),
    _stamp(),
    PrimaryKeyConstraint("tenant_id", "psa_contract_id", "psa_service_id"),
)
Index("ix_desired_lines_tenant_status", desired_lines.c.tenant_id, desired_lines.c.status)

approvals = Table(
    "approvals", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", String(36), nullable=False),
    Column("contract_id", String(64), nullable=False),
    Column("service_id", String(64), nullable=False),
    Column("kind", String(20), nullable=False),
    Column("quantity_before", Integer, nullable=True),
    Column("quantity_after", Integer, nullable=False),
    Column("unit_price_before", MONEY, nullable=True),
    Column("unit_price", MONEY, nullable=True),
    Column("unit_cost", MONEY, nullable=True),
    Column("effective_date", Date, nullable=False),
    Column("reasons", JSONB, nullable=False, server_default=text("'[]'::jsonb")),
    Column("proposal", JSONB, nullable=False),        # the checkpoints to apply on approval
    Column("fingerprint", String(64), nullable=False),
    Column("status", String(20), nullable=False, server_default="pending"),  # pending|approved|rejected|superseded
    Column("note", Text, nullable=True),
    Column("decided_by", String(320), nullable=True),
    Column("decided_at", DateTime(timezone=True), nullable=True),
    Column("effective_date_override", Date, nullable=True),
    _stamp("created_at"),
    PrimaryKeyConstraint("tenant_id", "id"),
)
Index("ix_approvals_tenant_status_created", approvals.c.tenant_id, approvals.c.status, approvals.c.created_at)
Index("ux_approvals_one_pending_per_line", approvals.c.tenant_id, approvals.c.contract_id, approvals.c.service_id,
      unique=True, postgresql_where=text("status = 'pending'"))

mapping_audit = Table(
    "mapping_audit", metadata,
    Column("tenant_id", String(64), nullable=False),
    Column("id", BigInteger, Identity(always=False), nullable=False),
    Column("at", DateTime(timezone=True), nullable=False, server_default=func.now()),
    Column("actor", String(320), nullable=False),     # a person's e-mail, or "system: <why>"
    Column("kind", String(20), nullable=False),       # customer|product|line|override|settings|approval
    Column("key", String(300), nullable=False),
    Column("action", String(40), nullable=False),
    Column("before", JSONB, nullable=True),
    Column("after", JSONB, nullable=True),
    PrimaryKeyConstraint("tenant_id", "id"),
)
Index("ix_mapping_audit_tenant_at", mapping_audit.c.tenant_id, mapping_audit.c.at)
Index("ix_mapping_audit_tenant_kind_key", mapping_audit.c.tenant_id, mapping_audit.c.kind, mapping_audit.c.key)
