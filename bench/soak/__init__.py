"""``delivery soak``: a fault-injection soak over real processes (see docs/soak.md)."""
