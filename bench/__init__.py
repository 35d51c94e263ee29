"""Benchmarks and the fault-injection soak (not imported by the product)."""
