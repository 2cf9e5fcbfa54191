"""SQLAlchemy 2 typed models: one ``incidents`` row per failed recipient of a family bounce.

Times are stored as UTC. SQLite has no time zone type, so :class:`UTCDateTime` stores naive UTC
and hands back aware datetimes on both databases. The schema itself is owned by the Alembic
migrations in ``storage/migrations``; ``Base.metadata`` must stay in step with them (a test
compares the two).
"""

from __future__ import annotations

from datetime import UTC, datetime

from sqlalchemy import (
    Boolean,
    DateTime,
    Dialect,
    Index,
    Integer,
    String,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column


class UTCDateTime(TypeDecorator[datetime]):
    """Aware UTC datetimes in, aware UTC datetimes out, whatever the database keeps."""

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to a UTC column")
        value = value.astimezone(UTC)
        # SQLite keeps text: store naive UTC so that comparisons and date() work on it.
        return value.replace(tzinfo=None) if dialect.name == "sqlite" else value

    def process_result_value(self, value: datetime | None, dialect: Dialect) -> datetime | None:
        if value is None:
            return None
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


class Base(DeclarativeBase):
    pass


class Incident(Base):
    """One recipient that a family bounce reported as failed."""

    __tablename__ = "incidents"
    __table_args__ = (UniqueConstraint("fingerprint", name="uq_incidents_fingerprint"),)

    #: ULID: sorts by creation time, so it is also the pagination key.
    id: Mapped[str] = mapped_column(String(26), primary_key=True)
    #: sha256 of the bounce bytes + the failed recipient: an upstream retry of the same bounce
    #: (after a 4xx) hits this unique key instead of making a second incident.
    fingerprint: Mapped[str] = mapped_column(String(64))
    recorded_at: Mapped[datetime] = mapped_column(UTCDateTime(), index=True)
    transaction_id: Mapped[str | None] = mapped_column(String(64))
    bounce_message_id: Mapped[str | None] = mapped_column(Text)
    #: The bounce's own envelope: MAIL FROM (normally "" for a DSN, RFC 3461 section 6.2) and RCPT TO.
    envelope_sender: Mapped[str] = mapped_column(Text, default="")
    envelope_recipient: Mapped[str | None] = mapped_column(Text)
    #: Who sent the message that failed (the bounce's recipient, else the original From), lower case.
    sender: Mapped[str | None] = mapped_column(String(320), index=True)
    sender_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    failed_recipient: Mapped[str | None] = mapped_column(String(320), index=True)
    recipient_domain: Mapped[str | None] = mapped_column(String(255), index=True)
    original_recipient: Mapped[str | None] = mapped_column(Text)
    #: The most specific family code the bounce gave for the recipient (what is explained).
    status: Mapped[str | None] = mapped_column(String(16), index=True)
    #: The bounce's own Status field for the recipient, e.g. the generic 5.7.0 around a 5.7.133.
    reported_status: Mapped[str | None] = mapped_column(String(16))
    diagnostic: Mapped[str | None] = mapped_column(Text)
    category: Mapped[str | None] = mapped_column(String(64))
    variant: Mapped[str | None] = mapped_column(String(64), index=True)
    reporting_mta: Mapped[str | None] = mapped_column(Text)
    remote_mta: Mapped[str | None] = mapped_column(Text)
    original_message_id: Mapped[str | None] = mapped_column(Text)
    original_from: Mapped[str | None] = mapped_column(Text)
    original_subject: Mapped[str | None] = mapped_column(Text)
    original_date: Mapped[str | None] = mapped_column(Text)
    client_address: Mapped[str | None] = mapped_column(String(64))
    helo: Mapped[str | None] = mapped_column(Text)
    annotated: Mapped[bool] = mapped_column(Boolean, default=False)
    relay_outcome: Mapped[str | None] = mapped_column(String(64))
    instance: Mapped[str | None] = mapped_column(String(255))
    #: Which part of bouncegw found the bounce: "relay" (in the mail flow) or "scan" (a mailbox).
    source: Mapped[str] = mapped_column(String(16), index=True, default="relay", server_default="relay")


# "Incidents since X for recipient Y" is the common query; id breaks ties for the cursor.
Index("ix_incidents_recipient_time", Incident.failed_recipient, Incident.recorded_at)
# The incident console's problems view groups by recipient and variant (storage.problems): this
# index holds every column that query reads, so it is answered from the index alone, in group order.
Index(
    "ix_incidents_problems",
    Incident.failed_recipient,
    Incident.variant,
    Incident.recorded_at,
    Incident.sender,
    Incident.id,
)


class RecipientTraffic(Base):
    """Mail relayed to a recipient that has refused us, counted since its last bounce.

    Only recipients with an incident get a row (the relay checks each recipient against a set of
    known refusing recipients, nothing more): the console's evidence that a problem went quiet.
    """

    __tablename__ = "recipient_traffic"

    recipient: Mapped[str] = mapped_column(String(320), primary_key=True)
    #: Messages the next hop accepted for the recipient since ``since``.
    relayed: Mapped[int] = mapped_column(Integer, default=0)
    #: When counting (re)started: the last bounce for the recipient this gateway relayed.
    since: Mapped[datetime] = mapped_column(UTCDateTime())
    last_relayed_at: Mapped[datetime | None] = mapped_column(UTCDateTime())
