"""One fuzz seed per run, and how many cases each fuzz test ran (printed at the end
of the run by ``tests/conftest.py``). ``JISR_FUZZ_SEED=<seed>`` replays a run."""

from __future__ import annotations

import collections
import os
import random

SEED = int(os.environ.get("JISR_FUZZ_SEED") or random.SystemRandom().randrange(2**32))
CASES: collections.Counter[str] = collections.Counter()  # test name -> cases run


def count(test: str) -> None:
    CASES[test] += 1
