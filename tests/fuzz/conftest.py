"""Fuzz tests: Hypothesis-generated and mutated inputs against the parsers and the
running server, from one seed per run (``tests/fuzz/seed.py``)."""

from __future__ import annotations

from hypothesis import HealthCheck, settings

settings.register_profile(
    "fuzz",
    deadline=None,
    database=None,  # every run explores afresh from its seed
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
)
settings.load_profile("fuzz")
