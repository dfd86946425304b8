"""initial schema: every table of SPEC §6, so later revisions only add to it

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-29 17:49:53.253657
"""
from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0001_initial'
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def key(length: int) -> Any:
    """Identifiers sort bytewise on both backends."""
    return sa.String(length=length).with_variant(sa.String(length=length, collation="C"), "postgresql")


def json() -> Any:
    return sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql")


def upgrade() -> None:
    op.create_table('applied_ops',
    sa.Column('op_id', key(64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('kind', sa.String(length=64), nullable=False),
    sa.Column('applied_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('op_id')
    )
    op.create_table('rate_buckets',
    sa.Column('token_id', key(64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('tokens', sa.Float(), nullable=False),
    sa.Column('updated_at', sa.Float(), nullable=False),
    sa.PrimaryKeyConstraint('token_id')
    )
    op.create_table('tenants',
    sa.Column('name', key(64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name')
    )
    op.create_table('agents',
    sa.Column('uid', key(36), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('id', key(128), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('model_family', sa.String(length=64), nullable=False),
    sa.Column('capacity', sa.Integer(), nullable=False),
    sa.Column('active_tasks', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('status_reason', sa.String(length=500), nullable=True),
    sa.Column('success_rate', sa.Float(), nullable=False),
    sa.Column('average_quality', sa.Float(), nullable=False),
    sa.Column('average_latency_ms', sa.Float(), nullable=False),
    sa.Column('task_count', sa.Integer(), nullable=False),
    sa.Column('metadata', json(), nullable=False),
    sa.Column('registered_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('last_active_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.CheckConstraint('active_tasks >= 0', name='ck_agents_active_tasks'),
    sa.CheckConstraint('capacity BETWEEN 1 AND 1000', name='ck_agents_capacity'),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.name'], ),
    sa.PrimaryKeyConstraint('uid'),
    sa.UniqueConstraint('tenant', 'id', name='uq_agents_tenant_id')
    )
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.create_index('ix_agents_tenant_status', ['tenant', 'status'], unique=False)

    op.create_table('audit_events',
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('seq', sa.BigInteger(), autoincrement=False, nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('actor', sa.String(length=64), nullable=True),
    sa.Column('action', sa.String(length=64), nullable=False),
    sa.Column('target', sa.String(length=256), nullable=True),
    sa.Column('result', sa.String(length=16), nullable=False),
    sa.Column('correlation_id', sa.String(length=200), nullable=True),
    sa.Column('details', json(), nullable=False),
    sa.Column('prev_hash', sa.String(length=64), nullable=False),
    sa.Column('hash', sa.String(length=64), nullable=False),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.name'], ),
    sa.PrimaryKeyConstraint('tenant', 'seq')
    )
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.create_index('ix_audit_events_tenant_at', ['tenant', 'at'], unique=False)

    op.create_table('decisions',
    sa.Column('decision_id', key(36), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('task_id', key(128), nullable=False),
    sa.Column('task_type', sa.String(length=64), nullable=False),
    sa.Column('priority', sa.Integer(), nullable=False),
    sa.Column('requirements', json(), nullable=False),
    sa.Column('metadata', json(), nullable=False),
    sa.Column('agent_id', key(128), nullable=True),
    sa.Column('agent_uid', key(36), nullable=True),
    sa.Column('strategy', sa.String(length=32), nullable=False),
    sa.Column('seed', sa.BigInteger(), nullable=False),
    sa.Column('explored', sa.Boolean(), nullable=False),
    sa.Column('confidence', sa.Float(), nullable=True),
    sa.Column('candidates', json(), nullable=False),
    sa.Column('excluded', json(), nullable=False),
    sa.Column('config_hash', sa.String(length=64), nullable=False),
    sa.Column('latency_us', sa.Integer(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('correlation_id', sa.String(length=200), nullable=True),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('closed_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('outcome', json(), nullable=True),
    sa.Column('over_capacity', sa.Boolean(), nullable=False),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.name'], ),
    sa.PrimaryKeyConstraint('decision_id')
    )
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.create_index('ix_decisions_status_created', ['status', 'created_at'], unique=False)
        batch_op.create_index('ix_decisions_tenant_agent', ['tenant', 'agent_id'], unique=False)
        batch_op.create_index('ix_decisions_tenant_created', ['tenant', 'created_at'], unique=False)
        batch_op.create_index('uq_decisions_open_task', ['tenant', 'task_id'], unique=True, sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))

    op.create_table('tokens',
    sa.Column('id', key(64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('secret_hash', sa.String(length=64), nullable=False),
    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('expires_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('revoked_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('last_used_at', sa.DateTime(timezone=True), nullable=True),
    sa.Column('rate', sa.Float(), nullable=True),
    sa.Column('burst', sa.Integer(), nullable=True),
    sa.ForeignKeyConstraint(['tenant'], ['tenants.name'], ),
    sa.PrimaryKeyConstraint('id')
    )
    op.create_table('agent_languages',
    sa.Column('agent_uid', key(36), nullable=False),
    sa.Column('language_key', sa.String(length=64), nullable=False),
    sa.Column('language', sa.String(length=64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.ForeignKeyConstraint(['agent_uid'], ['agents.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_uid', 'language_key')
    )
    with op.batch_alter_table('agent_languages', schema=None) as batch_op:
        batch_op.create_index('ix_agent_languages_lookup', ['tenant', 'language_key'], unique=False)

    op.create_table('agent_specializations',
    sa.Column('agent_uid', key(36), nullable=False),
    sa.Column('label_key', sa.String(length=64), nullable=False),
    sa.Column('label', sa.String(length=64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.ForeignKeyConstraint(['agent_uid'], ['agents.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_uid', 'label_key')
    )
    with op.batch_alter_table('agent_specializations', schema=None) as batch_op:
        batch_op.create_index('ix_agent_specializations_lookup', ['tenant', 'label_key'], unique=False)

    op.create_table('agent_task_types',
    sa.Column('agent_uid', key(36), nullable=False),
    sa.Column('task_type', sa.String(length=64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.ForeignKeyConstraint(['agent_uid'], ['agents.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_uid', 'task_type')
    )
    with op.batch_alter_table('agent_task_types', schema=None) as batch_op:
        batch_op.create_index('ix_agent_task_types_lookup', ['tenant', 'task_type'], unique=False)

    op.create_table('arms',
    sa.Column('agent_uid', key(36), nullable=False),
    sa.Column('task_type', sa.String(length=64), nullable=False),
    sa.Column('tenant', key(64), nullable=False),
    sa.Column('alpha', sa.Float(), nullable=False),
    sa.Column('beta', sa.Float(), nullable=False),
    sa.Column('outcomes', sa.Integer(), nullable=False),
    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['agent_uid'], ['agents.uid'], ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('agent_uid', 'task_type')
    )
    with op.batch_alter_table('arms', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_arms_tenant'), ['tenant'], unique=False)



def downgrade() -> None:
    with op.batch_alter_table('arms', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_arms_tenant'))

    op.drop_table('arms')
    with op.batch_alter_table('agent_task_types', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_task_types_lookup')

    op.drop_table('agent_task_types')
    with op.batch_alter_table('agent_specializations', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_specializations_lookup')

    op.drop_table('agent_specializations')
    with op.batch_alter_table('agent_languages', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_languages_lookup')

    op.drop_table('agent_languages')
    op.drop_table('tokens')
    with op.batch_alter_table('decisions', schema=None) as batch_op:
        batch_op.drop_index('uq_decisions_open_task', sqlite_where=sa.text("status = 'open'"), postgresql_where=sa.text("status = 'open'"))
        batch_op.drop_index('ix_decisions_tenant_created')
        batch_op.drop_index('ix_decisions_tenant_agent')
        batch_op.drop_index('ix_decisions_status_created')

    op.drop_table('decisions')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_index('ix_audit_events_tenant_at')

    op.drop_table('audit_events')
    with op.batch_alter_table('agents', schema=None) as batch_op:
        batch_op.drop_index('ix_agents_tenant_status')

    op.drop_table('agents')
    op.drop_table('tenants')
    op.drop_table('rate_buckets')
    op.drop_table('applied_ops')
