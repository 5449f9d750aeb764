"""resumable rollouts (request_hash) and checkpoint leases

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-23 19:40:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision have no request hash: a resumed run regenerates their groups once.
    with op.batch_alter_table('rollouts') as batch:
        batch.add_column(sa.Column('request_hash', sa.String(length=32), nullable=True,
                                   comment='hash of what produced the sample group (prompt, n, seed, decoding, weights): a resumed run keeps a committed group only while this matches'))
    op.create_table('checkpoint_leases',
    sa.Column('checkpoint_id', sa.String(length=128), nullable=False),
    sa.Column('run_id', sa.String(length=64), nullable=False),
    sa.Column('host', sa.String(length=255), nullable=False),
    sa.Column('pid', sa.Integer(), nullable=False),
    sa.Column('acquired_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('heartbeat_at', sa.DateTime(timezone=True), nullable=False, comment='refreshed at every step and chunk commit'),
    sa.PrimaryKeyConstraint('checkpoint_id', name=op.f('pk_checkpoint_leases'))
    )


def downgrade() -> None:
    op.drop_table('checkpoint_leases')
    with op.batch_alter_table('rollouts') as batch:
        batch.drop_column('request_hash')
