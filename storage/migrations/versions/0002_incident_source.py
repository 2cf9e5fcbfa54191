"""incidents.source: which part of bouncegw found the bounce

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Rows written before this revision came from the relay: the server default says so.
    with op.batch_alter_table("incidents") as batch:
        batch.add_column(sa.Column("source", sa.String(16), nullable=False, server_default="relay"))
        batch.create_index("ix_incidents_source", ["source"])


def downgrade() -> None:
    with op.batch_alter_table("incidents") as batch:
        batch.drop_index("ix_incidents_source")
        batch.drop_column("source")
