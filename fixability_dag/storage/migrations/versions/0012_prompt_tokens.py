"""prompt tokens per rollout (rollouts.prompt_tokens): what the engine prefilled, so an audit's cost counts its
prompts beside its generated tokens

A request's prompt is prefilled once for its ``n`` samples: its first sample's row carries the prompt's tokens, the
others 0; a tool sample adds the prompt of each continuation it needed. Rows written before this revision (and rows
from an engine that does not say) are NULL: unknown, not 0.

Revision ID: 0012
Revises: 0011
Create Date: 2026-12-03 06:30:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0012'
down_revision = '0011'
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table('rollouts') as batch:
        batch.add_column(sa.Column('prompt_tokens', sa.Integer(), nullable=True,
                                   comment='prompt tokens prefilled for this sample (the request\'s on its first '
                                           'sample, 0 on the others); NULL: unknown'))


def downgrade() -> None:
    with op.batch_alter_table('rollouts') as batch:
        batch.drop_column('prompt_tokens')
