"""posting ledger: posting_groups (desired schedule, lease, expected PSA state), postings (the
ledger, unique idempotency_key) and request_budget (per-minute request counts) - common/posting/tables.py

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 09:57:58.201001
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('posting_groups',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('contract_id', sa.String(length=64), nullable=False),
    sa.Column('service_id', sa.String(length=64), nullable=False),
    sa.Column('company_id', sa.String(length=64), nullable=True),
    sa.Column('desired', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('desired_version', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('pending_from', sa.Date(), nullable=True),
    sa.Column('seq', sa.BigInteger(), server_default=sa.text('0'), nullable=False),
    sa.Column('claimed_seq', sa.BigInteger(), nullable=True),
    sa.Column('due_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('lease_owner', sa.String(length=120), nullable=True),
    sa.Column('lease_until', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('status_message', sa.Text(), nullable=True),
    sa.Column('expected', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('posted_horizon', sa.Date(), nullable=True),
    sa.Column('edit_round', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('overwrite_once', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('failures', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('changed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('touched_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('vendor_line_id', sa.String(length=64), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'contract_id', 'service_id')
    )
    op.create_index('ix_posting_groups_due', 'posting_groups', ['due_at'], unique=False, postgresql_where=sa.text('due_at IS NOT NULL'))
    op.create_index('ix_posting_groups_tenant_status', 'posting_groups', ['tenant_id', 'status'], unique=False)
    op.create_table('postings',
    sa.Column('id', sa.BigInteger(), autoincrement=True, nullable=False),
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('contract_id', sa.String(length=64), nullable=False),
    sa.Column('service_id', sa.String(length=64), nullable=False),
    sa.Column('idempotency_key', sa.String(length=64), nullable=False),
    sa.Column('operation', sa.String(length=30), nullable=False),
    sa.Column('state', sa.String(length=20), nullable=False),
    sa.Column('effective_date', sa.Date(), nullable=False),
    sa.Column('quantity_before', sa.Integer(), nullable=True),
    sa.Column('quantity_after', sa.Integer(), nullable=True),
    sa.Column('unit_change', sa.Integer(), nullable=True),
    sa.Column('unit_price', sa.Numeric(precision=14, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=14, scale=4), nullable=True),
    sa.Column('desired_version', sa.BigInteger(), nullable=False),
    sa.Column('params', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'{}'::jsonb"), nullable=False),
    sa.Column('attempts', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('vendor_item_id', sa.String(length=64), nullable=True),
    sa.Column('vendor_message', sa.Text(), nullable=True),
    sa.Column('outcome_unknown', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('next_attempt_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('sent_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('posted_at', sa.DateTime(timezone=True), nullable=True),
    sa.PrimaryKeyConstraint('id'),
    sa.UniqueConstraint('idempotency_key')
    )
    op.create_index('ix_postings_line', 'postings', ['tenant_id', 'contract_id', 'service_id'], unique=False)
    op.create_index('ix_postings_tenant_state', 'postings', ['tenant_id', 'state'], unique=False)
    op.create_table('request_budget',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('psa', sa.String(length=20), nullable=False),
    sa.Column('minute', sa.DateTime(timezone=True), nullable=False),
    sa.Column('used', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'psa', 'minute')
    )


def downgrade():
    op.drop_table('request_budget')
    op.drop_index('ix_postings_tenant_state', table_name='postings')
    op.drop_index('ix_postings_line', table_name='postings')
    op.drop_table('postings')
    op.drop_index('ix_posting_groups_tenant_status', table_name='posting_groups')
    op.drop_index('ix_posting_groups_due', table_name='posting_groups', postgresql_where=sa.text('due_at IS NOT NULL'))
    op.drop_table('posting_groups')
