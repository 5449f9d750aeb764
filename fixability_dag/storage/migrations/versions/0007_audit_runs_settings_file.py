"""audit runs: the settings file a step's settings came from ($FIXABILITY_SETTINGS or fixability audit --config)

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02 15:00:00
"""
from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Steps recorded before this revision keep NULL: which file they read was not recorded (their settings are, in
    # the config column, as they were).
    with op.batch_alter_table('audit_runs') as batch:
        batch.add_column(sa.Column('settings_file', sa.String(1024), nullable=True,
                                   comment='settings file the step read; NULL: the demo defaults (or not recorded)'))


def downgrade() -> None:
    with op.batch_alter_table('audit_runs') as batch:
        batch.drop_column('settings_file')
