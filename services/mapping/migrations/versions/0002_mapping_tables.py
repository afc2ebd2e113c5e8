"""mapping tables: marketplace copies (customers, products, lines, line_states), the three
mapping screens (customer_mappings, product_mappings, price_overrides, line_links), the PSA
reference cache, billing_settings, desired_lines, approvals and the mapping audit trail.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-25 08:54:07.327412
"""
from alembic import op
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('approvals',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.String(length=36), nullable=False),
    sa.Column('contract_id', sa.String(length=64), nullable=False),
    sa.Column('service_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('quantity_before', sa.Integer(), nullable=True),
    sa.Column('quantity_after', sa.Integer(), nullable=False),
    sa.Column('unit_price_before', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('effective_date', sa.Date(), nullable=False),
    sa.Column('reasons', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('proposal', postgresql.JSONB(astext_type=sa.Text()), nullable=False),
    sa.Column('fingerprint', sa.String(length=64), nullable=False),
    sa.Column('status', sa.String(length=20), server_default='pending', nullable=False),
    sa.Column('note', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('effective_date_override', sa.Date(), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'id')
    )
    op.create_index('ix_approvals_tenant_status_created', 'approvals', ['tenant_id', 'status', 'created_at'], unique=False)
    op.create_index('ux_approvals_one_pending_per_line', 'approvals', ['tenant_id', 'contract_id', 'service_id'], unique=True, postgresql_where=sa.text("status = 'pending'"))
    op.create_table('billing_settings',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('psa', sa.String(length=20), nullable=True),
    sa.Column('posting_mode', sa.String(length=20), server_default='auto', nullable=False),
    sa.Column('threshold_units', sa.Integer(), nullable=True),
    sa.Column('threshold_percent', sa.Numeric(precision=9, scale=4), nullable=True),
    sa.Column('bill_suspended', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('credit_decreases_immediately', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('edited_in_psa', sa.String(length=20), server_default='hold', nullable=False),
    sa.Column('references_refreshed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refresh_requested_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refresh_attempted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('refresh_error', sa.Text(), nullable=True),
    sa.Column('updated_by', sa.String(length=320), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id')
    )
    op.create_table('customer_mappings',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('psa_company_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='unmapped', nullable=False),
    sa.Column('score', sa.Numeric(precision=5, scale=1), nullable=True),
    sa.Column('method', sa.String(length=30), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'customer_id')
    )
    op.create_index('ix_customer_mappings_tenant_company', 'customer_mappings', ['tenant_id', 'psa_company_id'], unique=False)
    op.create_index('ix_customer_mappings_tenant_status', 'customer_mappings', ['tenant_id', 'status'], unique=False)
    op.create_table('customers',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('domain', sa.String(length=255), nullable=True),
    sa.Column('status', sa.String(length=40), server_default='active', nullable=False),
    sa.Column('placeholder', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'customer_id')
    )
    op.create_index('ix_customers_tenant_lower_name', 'customers', ['tenant_id', sa.literal_column('lower(name)')], unique=False)
    op.create_table('desired_lines',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('psa_contract_id', sa.String(length=64), nullable=False),
    sa.Column('psa_service_id', sa.String(length=64), nullable=False),
    sa.Column('company_id', sa.String(length=64), nullable=True),
    sa.Column('quantity', sa.Integer(), nullable=True),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('currency', sa.String(length=3), nullable=True),
    sa.Column('lines', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('effective_date', sa.Date(), nullable=True),
    sa.Column('version', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('emitted_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='ok', nullable=False),
    sa.Column('reasons', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('timeline', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('origin', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('timeline_rev', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'psa_contract_id', 'psa_service_id')
    )
    op.create_index('ix_desired_lines_tenant_status', 'desired_lines', ['tenant_id', 'status'], unique=False)
    op.create_table('line_links',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('subscription_id', sa.String(length=64), nullable=False),
    sa.Column('mpn', sa.String(length=120), nullable=False),
    sa.Column('psa_contract_id', sa.String(length=64), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='unmapped', nullable=False),
    sa.Column('score', sa.Numeric(precision=5, scale=1), nullable=True),
    sa.Column('method', sa.String(length=30), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'subscription_id', 'mpn')
    )
    op.create_index('ix_line_links_tenant_contract', 'line_links', ['tenant_id', 'psa_contract_id'], unique=False)
    op.create_index('ix_line_links_tenant_status', 'line_links', ['tenant_id', 'status'], unique=False)
    op.create_table('line_states',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('subscription_id', sa.String(length=64), nullable=False),
    sa.Column('mpn', sa.String(length=120), nullable=False),
    sa.Column('line_version', sa.Integer(), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('currency', sa.String(length=3), server_default='USD', nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('event_id', sa.String(length=64), nullable=True),
    sa.Column('received_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'subscription_id', 'mpn', 'line_version')
    )
    op.create_table('lines',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('subscription_id', sa.String(length=64), nullable=False),
    sa.Column('mpn', sa.String(length=120), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('quantity', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('currency', sa.String(length=3), server_default='USD', nullable=False),
    sa.Column('seen_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('line_version', sa.Integer(), nullable=False),
    sa.Column('change', sa.String(length=20), nullable=True),
    sa.Column('billed_contract_id', sa.String(length=64), nullable=True),
    sa.Column('billed_service_id', sa.String(length=64), nullable=True),
    sa.Column('billed_version', sa.Integer(), nullable=True),
    sa.Column('rebase_contract_id', sa.String(length=64), nullable=True),
    sa.Column('rebase_service_id', sa.String(length=64), nullable=True),
    sa.Column('rebase_version', sa.Integer(), nullable=True),
    sa.Column('rebased_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'subscription_id', 'mpn')
    )
    op.create_index('ix_lines_tenant_billed', 'lines', ['tenant_id', 'billed_contract_id', 'billed_service_id'], unique=False)
    op.create_index('ix_lines_tenant_customer', 'lines', ['tenant_id', 'customer_id'], unique=False)
    op.create_index('ix_lines_tenant_mpn', 'lines', ['tenant_id', 'mpn'], unique=False)
    op.create_table('mapping_audit',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('id', sa.BigInteger(), sa.Identity(always=False), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('actor', sa.String(length=320), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('key', sa.String(length=300), nullable=False),
    sa.Column('action', sa.String(length=40), nullable=False),
    sa.Column('before', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.Column('after', postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    sa.PrimaryKeyConstraint('tenant_id', 'id')
    )
    op.create_index('ix_mapping_audit_tenant_at', 'mapping_audit', ['tenant_id', 'at'], unique=False)
    op.create_index('ix_mapping_audit_tenant_kind_key', 'mapping_audit', ['tenant_id', 'kind', 'key'], unique=False)
    op.create_table('price_overrides',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('customer_id', sa.String(length=64), nullable=False),
    sa.Column('mpn', sa.String(length=120), nullable=False),
    sa.Column('price_rule', sa.String(length=20), nullable=False),
    sa.Column('markup_pct', sa.Numeric(precision=9, scale=4), nullable=True),
    sa.Column('fixed_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'customer_id', 'mpn')
    )
    op.create_table('product_mappings',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('mpn', sa.String(length=120), nullable=False),
    sa.Column('psa_service_id', sa.String(length=64), nullable=True),
    sa.Column('price_rule', sa.String(length=20), nullable=True),
    sa.Column('markup_pct', sa.Numeric(precision=9, scale=4), nullable=True),
    sa.Column('fixed_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('status', sa.String(length=20), server_default='unmapped', nullable=False),
    sa.Column('score', sa.Numeric(precision=5, scale=1), nullable=True),
    sa.Column('method', sa.String(length=30), nullable=True),
    sa.Column('reason', sa.Text(), nullable=True),
    sa.Column('decided_by', sa.String(length=320), nullable=True),
    sa.Column('decided_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'mpn')
    )
    op.create_index('ix_product_mappings_tenant_service', 'product_mappings', ['tenant_id', 'psa_service_id'], unique=False)
    op.create_index('ix_product_mappings_tenant_status', 'product_mappings', ['tenant_id', 'status'], unique=False)
    op.create_table('products',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('mpn', sa.String(length=120), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('vendor', sa.String(length=200), nullable=True),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('currency', sa.String(length=3), server_default='USD', nullable=False),
    sa.Column('billing_period', sa.String(length=40), nullable=True),
    sa.Column('placeholder', sa.Boolean(), server_default=sa.text('false'), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'mpn')
    )
    op.create_index('ix_products_tenant_lower_name', 'products', ['tenant_id', sa.literal_column('lower(name)')], unique=False)
    op.create_table('psa_references',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('kind', sa.String(length=20), nullable=False),
    sa.Column('psa_id', sa.String(length=64), nullable=False),
    sa.Column('psa', sa.String(length=20), nullable=False),
    sa.Column('name', sa.String(length=300), nullable=False),
    sa.Column('active', sa.Boolean(), nullable=False),
    sa.Column('company_id', sa.String(length=64), nullable=True),
    sa.Column('recurring', sa.Boolean(), server_default=sa.text('true'), nullable=False),
    sa.Column('start_date', sa.Date(), nullable=True),
    sa.Column('period_months', sa.Integer(), server_default=sa.text('1'), nullable=False),
    sa.Column('billing_cycle', sa.String(length=40), nullable=True),
    sa.Column('unit_price', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('unit_cost', sa.Numeric(precision=18, scale=4), nullable=True),
    sa.Column('identifier', sa.String(length=200), nullable=True),
    sa.Column('domains', postgresql.JSONB(astext_type=sa.Text()), server_default=sa.text("'[]'::jsonb"), nullable=False),
    sa.Column('refreshed_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id', 'kind', 'psa_id')
    )
    op.create_index('ix_psa_references_tenant_kind_company', 'psa_references', ['tenant_id', 'kind', 'company_id'], unique=False)
    op.create_index('ix_psa_references_tenant_kind_name', 'psa_references', ['tenant_id', 'kind', sa.literal_column('lower(name)')], unique=False)


def downgrade():
    op.drop_index('ix_psa_references_tenant_kind_name', table_name='psa_references')
    op.drop_index('ix_psa_references_tenant_kind_company', table_name='psa_references')
    op.drop_table('psa_references')
    op.drop_index('ix_products_tenant_lower_name', table_name='products')
    op.drop_table('products')
    op.drop_index('ix_product_mappings_tenant_status', table_name='product_mappings')
    op.drop_index('ix_product_mappings_tenant_service', table_name='product_mappings')
    op.drop_table('product_mappings')
    op.drop_table('price_overrides')
    op.drop_index('ix_mapping_audit_tenant_kind_key', table_name='mapping_audit')
    op.drop_index('ix_mapping_audit_tenant_at', table_name='mapping_audit')
    op.drop_table('mapping_audit')
    op.drop_index('ix_lines_tenant_mpn', table_name='lines')
    op.drop_index('ix_lines_tenant_customer', table_name='lines')
    op.drop_index('ix_lines_tenant_billed', table_name='lines')
    op.drop_table('lines')
    op.drop_table('line_states')
    op.drop_index('ix_line_links_tenant_status', table_name='line_links')
    op.drop_index('ix_line_links_tenant_contract', table_name='line_links')
    op.drop_table('line_links')
    op.drop_index('ix_desired_lines_tenant_status', table_name='desired_lines')
    op.drop_table('desired_lines')
    op.drop_index('ix_customers_tenant_lower_name', table_name='customers')
    op.drop_table('customers')
    op.drop_index('ix_customer_mappings_tenant_status', table_name='customer_mappings')
    op.drop_index('ix_customer_mappings_tenant_company', table_name='customer_mappings')
    op.drop_table('customer_mappings')
    op.drop_table('billing_settings')
    op.drop_index('ux_approvals_one_pending_per_line', table_name='approvals', postgresql_where=sa.text("status = 'pending'"))
    op.drop_index('ix_approvals_tenant_status_created', table_name='approvals')
    op.drop_table('approvals')
