"""Redis failover under a live call: ``python -m bench.failover [--runs 5] [--json]``.

Each run sets up what deploy/redis/ describes (a primary, a replica and three
Sentinels with TLS and ACL users, ``down-after-milliseconds`` 1000 unless
``--down-after-ms`` says otherwise: deploy/redis/sentinel.conf has 5000) and two
``jisr serve`` nodes reaching it through the Sentinels, starts a call between two
aiortc peers (one signalling through the other node), kills the primary with
``kill -9`` and measures: kill to the Sentinels' ``+switch-master``; kill, and
``+switch-master``, to the first write the API takes again; kill to the first
event carried between the nodes again; the longest gap between two frames at a
subscriber. The scenario is tests/support/failover.py (the integration test runs
it once and asserts < 10 s); this needs the test dependencies (numpy).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import tempfile
from dataclasses import asdict
from pathlib import Path

from tests.conftest import Tokens, make_settings
from tests.redis_secure import DOWN_AFTER_MS
from tests.support.failover import Figures, run_failover

from .common import log, machine, machine_line, table

COLUMNS = {
    "kill_to_switch_s": "kill → +switch-master",
    "kill_to_api_s": "kill → API takes writes",
    "switch_to_api_s": "+switch-master → API",
    "kill_to_events_s": "kill → events between nodes",
    "longest_media_gap_s": "longest media gap",
}


def summary(runs: list[Figures]) -> list[list[str]]:
    rows = []
    for name, title in COLUMNS.items():
        values = [getattr(run, name) for run in runs]
        rows.append([title, f"{min(values):.2f}", f"{statistics.median(values):.2f}",
                     f"{max(values):.2f}"])  # fmt: skip
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.failover")
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--down-after-ms", type=int, default=DOWN_AFTER_MS,
                        help="the Sentinels' down-after-milliseconds")  # fmt: skip
    parser.add_argument("--json", action="store_true", help="one JSON object as the last line")
    args = parser.parse_args(argv)
    tokens = Tokens(make_settings())
    runs: list[Figures] = []
    for n in range(args.runs):
        with tempfile.TemporaryDirectory(prefix="jisr-failover-") as workdir:
            figures = asyncio.run(run_failover(Path(workdir), tokens, args.down_after_ms))
        runs.append(figures)
        log(f"run {n + 1}: " + ", ".join(f"{k} {v:.2f}" for k, v in asdict(figures).items()))
    print(machine_line(machine()) + f"; down-after-milliseconds {args.down_after_ms}")
    print(table(["seconds", "min", "median", "max"], summary(runs)))
    worst = max(run.kill_to_api_s for run in runs)
    print(f"kill → API takes writes, worst of {len(runs)}: {worst:.2f} s "
          f"(target < 10 s: {'met' if worst < 10 else 'missed'})")  # fmt: skip
    if args.json:
        print(json.dumps({"machine": machine(), "down_after_ms": args.down_after_ms,
                          "runs": [asdict(r) for r in runs]}))  # fmt: skip
    return 0 if worst < 10 else 1


if __name__ == "__main__":
    raise SystemExit(main())
