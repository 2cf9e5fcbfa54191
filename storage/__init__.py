"""Incident storage for bouncegw.

- :mod:`storage.incidents`: the :class:`~storage.incidents.IncidentRecord` built from a
  ``BounceReport`` (one per failed recipient), its id and fingerprint.
- :mod:`storage.models`: SQLAlchemy 2 typed table models.
- :mod:`storage.db`: engines, SQLite pragmas, Alembic upgrade and the schema check.
- :mod:`storage.repository`: synchronous record / query / get / stats / purge.
- :mod:`storage.journal`: the bounded, fsynced outage journal.
- :mod:`storage.recorder`: the asyncio front end the relay pipeline calls.
"""
