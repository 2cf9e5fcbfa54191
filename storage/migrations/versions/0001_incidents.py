"""incidents table

Revision ID: 0001
Revises:
Create Date: 2025-01-01
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

from storage.models import UTCDateTime

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "incidents",
        sa.Column("id", sa.String(26), primary_key=True),
        sa.Column("fingerprint", sa.String(64), nullable=False),
        sa.Column("recorded_at", UTCDateTime(), nullable=False),
        sa.Column("transaction_id", sa.String(64)),
        sa.Column("bounce_message_id", sa.Text()),
        sa.Column("envelope_sender", sa.Text(), nullable=False),
        sa.Column("envelope_recipient", sa.Text()),
        sa.Column("sender", sa.String(320)),
        sa.Column("sender_domain", sa.String(255)),
        sa.Column("failed_recipient", sa.String(320)),
        sa.Column("recipient_domain", sa.String(255)),
        sa.Column("original_recipient", sa.Text()),
        sa.Column("status", sa.String(16)),
        sa.Column("diagnostic", sa.Text()),
        sa.Column("category", sa.String(64)),
        sa.Column("variant", sa.String(64)),
        sa.Column("reporting_mta", sa.Text()),
        sa.Column("remote_mta", sa.Text()),
        sa.Column("original_message_id", sa.Text()),
        sa.Column("original_from", sa.Text()),
        sa.Column("original_subject", sa.Text()),
        sa.Column("original_date", sa.Text()),
        sa.Column("client_address", sa.String(64)),
        sa.Column("helo", sa.Text()),
        sa.Column("annotated", sa.Boolean(), nullable=False),
        sa.Column("relay_outcome", sa.String(64)),
        sa.Column("instance", sa.String(255)),
        sa.UniqueConstraint("fingerprint", name="uq_incidents_fingerprint"),
    )
    for column in ("recorded_at", "sender", "sender_domain", "failed_recipient", "recipient_domain",
                   "status", "variant"):
        op.create_index(f"ix_incidents_{column}", "incidents", [column])
    op.create_index("ix_incidents_recipient_time", "incidents", ["failed_recipient", "recorded_at"])


def downgrade() -> None:
    op.drop_table("incidents")
