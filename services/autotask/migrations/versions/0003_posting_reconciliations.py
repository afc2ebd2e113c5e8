"""posting_reconciliations: per tenant, the day its nightly PSA re-read last started and how many
contract lines it sent round - common/posting/tables.py, common/posting/reconcile.py

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25 17:45:00
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('posting_reconciliations',
    sa.Column('tenant_id', sa.String(length=64), nullable=False),
    sa.Column('run_on', sa.Date(), nullable=False),
    sa.Column('started_at', sa.DateTime(timezone=True), server_default=sa.text('now()'), nullable=False),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('lines', sa.Integer(), server_default=sa.text('0'), nullable=False),
    sa.PrimaryKeyConstraint('tenant_id')
    )


def downgrade():
    op.drop_table('posting_reconciliations')
