"""incidents.reported_status: the bounce's own Status field beside the explained status

Exchange Online wraps the specific code in a generic one (``554 5.7.0 < #5.7.133 ...>``):
``status`` holds the specific family code, ``reported_status`` what the Status field said.

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.add_column("incidents", sa.Column("reported_status", sa.String(16)))


def downgrade() -> None:
    # SQLite cannot drop a column in place before 3.35: batch mode copies the table.
    with op.batch_alter_table("incidents") as batch:
        batch.drop_column("reported_status")
