"""promotion_events.ci_low/ci_high: the paired bootstrap interval of challenger - champion on the holdout

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-06 13:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('promotion_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('ci_low', sa.Float(), nullable=True))
        batch_op.add_column(sa.Column('ci_high', sa.Float(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table('promotion_events', schema=None) as batch_op:
        batch_op.drop_column('ci_high')
        batch_op.drop_column('ci_low')
