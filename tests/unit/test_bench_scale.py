"""The forwarding benchmark's scale case: its rounds are read as asked, and a step's
figures are the medians of its rounds."""

from __future__ import annotations

import subprocess
import sys

from bench.scale import FIGURES, median_figures


def test_rounds_below_one_are_refused_with_a_clear_error():
    run = subprocess.run(
        [sys.executable, "-m", "bench.forwarding", "--scale-only", "--rounds", "0"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert "--rounds must be 1 or more" in run.stderr


def test_a_steps_figures_are_the_medians_of_its_rounds():
    def round_of(per_stream: float, fps: float, problems: list[str]) -> dict:
        return {key: per_stream for key in FIGURES} | {"min_fps": fps, "problems": problems}

    rounds = [round_of(0.5, 30.0, []), round_of(0.9, 28.5, ["slow"]), round_of(0.6, 30.0, [])]
    figures = median_figures(rounds)
    assert figures["per_stream_pct"] == 0.6 and figures["cpu_pct"] == 0.6
    assert figures["per_stream_rounds"] == [0.5, 0.9, 0.6]
    assert figures["min_fps"] == 28.5 and figures["problems"] == ["slow"]
