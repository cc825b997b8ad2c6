"""promotion audit log

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-24 21:20:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table('promotion_events',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('domain', sa.String(length=64), nullable=False),
    sa.Column('model_version_id', sa.Integer(), nullable=False),
    sa.Column('previous_champion_id', sa.Integer(), nullable=True),
    sa.Column('action', sa.String(length=16), nullable=False),
    sa.Column('metric', sa.String(length=32), nullable=False),
    sa.Column('challenger_score', sa.Float(), nullable=True),
    sa.Column('champion_score', sa.Float(), nullable=True),
    sa.Column('margin', sa.Float(), nullable=False),
    sa.Column('holdout', sa.String(length=64), nullable=True),
    sa.Column('reason', sa.Text(), nullable=False),
    sa.Column('actor', sa.String(length=128), nullable=False),
    sa.Column('at', sa.DateTime(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['model_version_id'], ['model_versions.id'], ),
    sa.ForeignKeyConstraint(['previous_champion_id'], ['model_versions.id'], ),
    sa.PrimaryKeyConstraint('id')
    )
    with op.batch_alter_table('promotion_events', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_promotion_events_domain'), ['domain'], unique=False)


def downgrade() -> None:
    with op.batch_alter_table('promotion_events', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_promotion_events_domain'))
    op.drop_table('promotion_events')
