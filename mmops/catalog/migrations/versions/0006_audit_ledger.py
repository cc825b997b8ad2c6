"""the audit log becomes a ledger: each event carries the hash of the previous one; audit_head holds the newest

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-06 12:00:00
"""

import sqlalchemy as sa
from alembic import op

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.add_column(sa.Column('prev_hash', sa.String(length=64), nullable=True))
        batch_op.add_column(sa.Column('hash', sa.String(length=64), nullable=True))
        batch_op.create_unique_constraint('uq_audit_events_hash', ['hash'])
    head = op.create_table('audit_head',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('events', sa.Integer(), nullable=False),
    sa.Column('last_id', sa.Integer(), nullable=True),
    sa.Column('last_hash', sa.String(length=64), nullable=True),
    sa.PrimaryKeyConstraint('id')
    )
    # the events recorded before the ledger are sealed in id order, as if they had been appended to it
    from mmops.audit import event_hash

    conn = op.get_bind()
    events = sa.table('audit_events', sa.column('id', sa.Integer), sa.column('at', sa.DateTime(timezone=True)),
                      sa.column('actor', sa.String), sa.column('action', sa.String), sa.column('domain', sa.String),
                      sa.column('subject', sa.String), sa.column('detail', sa.JSON),
                      sa.column('prev_hash', sa.String), sa.column('hash', sa.String))
    prev, n, last_id = None, 0, None
    for row in conn.execute(sa.select(events).order_by(events.c.id)).mappings().all():
        digest = event_hash({**row, "prev_hash": prev})
        conn.execute(events.update().where(events.c.id == row["id"]).values(prev_hash=prev, hash=digest))
        prev, n, last_id = digest, n + 1, row["id"]
    op.bulk_insert(head, [{"id": 1, "events": n, "last_id": last_id, "last_hash": prev}])


def downgrade() -> None:
    op.drop_table('audit_head')
    with op.batch_alter_table('audit_events', schema=None) as batch_op:
        batch_op.drop_constraint('uq_audit_events_hash', type_='unique')
        batch_op.drop_column('hash')
        batch_op.drop_column('prev_hash')
