"""Throughput, latency and memory benchmark of bouncegw against Postfix's tools and a bare relay.

Run with ``make bench`` (``python -m tests.benchmarks``). Not part of ``make test``: nothing
here asserts timings. Modules: :mod:`.messages` (test messages), :mod:`.bare_relay` (the
baseline relay), :mod:`.loadgen` (Python SMTP clients), :mod:`.procs` (process handling),
:mod:`.run` (the orchestration, table and JSON).
"""
