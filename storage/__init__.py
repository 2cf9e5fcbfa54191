"""Incident storage for bouncegw; it imports nothing from ``gateway`` (ARCHITECTURE.md).

- :mod:`storage.incidents`: the :class:`~storage.incidents.IncidentRecord` (one per failed
  recipient of a family bounce), its id and fingerprint, from plain values.
- :mod:`storage.models`: SQLAlchemy 2 typed table models.
- :mod:`storage.db`: engines, SQLite pragmas, Alembic upgrade and the schema check.
- :mod:`storage.repository`: synchronous record / query / get / stats / purge.
- :mod:`storage.journal`: the bounded, fsynced outage journal.
- :mod:`storage.recorder`: the asyncio front end the relay pipeline calls; it reports its events
  to an observer (``RecorderEvents``) the caller passes in.
"""
