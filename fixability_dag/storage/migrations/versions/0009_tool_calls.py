"""tool calls: per rollout (rollouts.tool_calls) and per label group (intervention_outcomes.tool_calls), for the
calculator tool intervention

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

COLUMNS = (
    ('rollouts', 'tool calls the sample made (tool interventions), refused ones included'),
    ('intervention_outcomes', "tool calls of the group's samples (tool interventions)"),
)


def upgrade() -> None:
    # Rows written before this revision made no tool calls: the server default 0 says so, without rewriting them.
    for table, comment in COLUMNS:
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column('tool_calls', sa.Integer(), nullable=True, server_default='0', comment=comment))


def downgrade() -> None:
    for table, _ in reversed(COLUMNS):
        with op.batch_alter_table(table) as batch:
            batch.drop_column('tool_calls')
