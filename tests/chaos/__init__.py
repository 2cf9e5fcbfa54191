"""The fault and abuse suite: the real gateway broken on purpose, every message counted."""
