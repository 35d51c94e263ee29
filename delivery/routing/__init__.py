"""Routing: a pure policy (``policy``) and its I/O adapter (``router``, ``tasks``, ``sweep``)."""
