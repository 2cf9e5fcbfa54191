"""recipient_traffic, and an index for the incident console's problems view

``recipient_traffic`` counts the mail relayed to each refusing recipient since its last bounce
(the console's evidence that a problem went quiet). ``ix_incidents_problems`` covers the
problems view's grouping query (recipient, variant, time, sender, id), so neither SQLite nor
PostgreSQL reads the table rows for it.

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-30
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = "0004"
down_revision = "0003"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "recipient_traffic",
        sa.Column("recipient", sa.String(320), primary_key=True),
        sa.Column("relayed", sa.Integer(), nullable=False),
        sa.Column("since", UTCDateTime(), nullable=False),
        sa.Column("last_relayed_at", UTCDateTime()),
    )
    op.create_index(
        "ix_incidents_problems",
        "incidents",
        ["failed_recipient", "variant", "recorded_at", "sender", "id"],
    )


def downgrade() -> None:
    op.drop_index("ix_incidents_problems", table_name="incidents")
    op.drop_table("recipient_traffic")
