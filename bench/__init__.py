"""Benchmarks and their harness processes, reached by ``delivery bench NAME``.

Tooling, not runtime: nothing under ``delivery/``, ``presence/`` or ``workers/`` imports it.
"""
