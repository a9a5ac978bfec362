"""Benchmarks: ``python -m bench.forwarding``, ``python -m bench.capacity``."""
