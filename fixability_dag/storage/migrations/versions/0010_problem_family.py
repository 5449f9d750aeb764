"""problem family: a model-organism problem's planted failure mechanism (problems.family), read only to validate
the regimes against the design (the gate table), never as a feature

Problems stored before this revision come from files or the arithmetic suite: they have no family (NULL).

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-02 18:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('problems') as batch:
        batch.add_column(sa.Column('family', sa.String(length=32), nullable=True,
                                   comment="a model-organism problem's planted mechanism (validation only, never a feature)"))


def downgrade() -> None:
    with op.batch_alter_table('problems') as batch:
        batch.drop_column('family')
