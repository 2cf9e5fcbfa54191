"""Storage's own tests: they run alone (``pytest tests/storage``) without importing ``gateway``."""
