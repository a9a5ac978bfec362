"""The call-quality judgement of the pages (web/js/qualitycause.js), run in this
machine's Node.js: the badge blames the network only for what the network does."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

SOURCE = Path(__file__).resolve().parents[2] / "web" / "js" / "qualitycause.js"

CASES = {
    # The report that started it: CPU-limited sender, 6 ms, no loss -> not the network.
    "cpu": {"lossPct": 0, "rttMs": 6, "sent": {"fps": 6, "limitation": "cpu"}, "incoming": []},
    "cpu_full_rate": {"lossPct": 0, "rttMs": 6, "sent": {"fps": 30, "limitation": "cpu"}},
    "good_2ms": {"lossPct": 0, "rttMs": 2, "sent": {"fps": 19.6, "limitation": "none"},
                 "incoming": [{"fps": 19.4, "receivedFps": 19.5, "droppedFps": 0, "decodeMs": 2}]},
    "loss": {"lossPct": 8, "rttMs": 20, "sent": {"fps": 30, "limitation": "none"}},
    "delay": {"lossPct": 0, "rttMs": 250, "sent": {"fps": 30, "limitation": "none"}},
    "bandwidth": {"lossPct": 0, "rttMs": 10, "sent": {"fps": 9, "limitation": "bandwidth"}},
    "camera": {"lossPct": 0, "rttMs": 10, "sent": {"fps": 5, "limitation": "none"}},
    "decoder": {"lossPct": 0, "rttMs": 10, "sent": None,
                "incoming": [{"fps": 6, "receivedFps": 28, "droppedFps": 0, "decodeMs": 30}]},
    "remote": {"lossPct": 0, "rttMs": 10, "sent": None,
               "incoming": [{"fps": 6, "receivedFps": 6, "droppedFps": 0, "decodeMs": 2}]},
}  # fmt: skip

EXPECTED = {
    "cpu": ("poor", "local_cpu", "quality.cause.local_cpu"),
    "cpu_full_rate": ("fair", "local_cpu", "quality.cause.local_cpu"),
    "good_2ms": ("good", "none", "quality.level.good"),
    "loss": ("poor", "loss", "quality.cause.loss_poor"),
    "delay": ("fair", "delay", "quality.cause.delay_fair"),
    "bandwidth": ("fair", "bandwidth", "quality.cause.bandwidth_fair"),
    "camera": ("poor", "local_camera", "quality.cause.local_camera"),
    "decoder": ("poor", "local_decoder", "quality.cause.local_decoder"),
    "remote": ("poor", "remote_sender", "quality.cause.remote_sender"),
}


def test_each_cause_is_named_and_only_the_network_reads_as_a_bad_connection(tmp_path):
    node = shutil.which("node")
    if node is None:
        pytest.fail("node is not installed (apt-get install nodejs)")
    module = tmp_path / "qualitycause.mjs"
    module.write_text(SOURCE.read_text())
    script = (
        f"import {{ judge, labelKey }} from {json.dumps(str(module))};"
        f"const cases = {json.dumps(CASES)};"
        "const out = {};"
        "for (const [k, c] of Object.entries(cases)) { const j = judge(c);"
        " out[k] = [j.level, j.cause, labelKey(j)]; }"
        "console.log(JSON.stringify(out));"
    )
    done = subprocess.run([node, "--input-type=module", "-e", script],
                          capture_output=True, text=True, timeout=30, check=True)  # fmt: skip
    got = {k: tuple(v) for k, v in json.loads(done.stdout).items()}
    assert got == EXPECTED
    english = json.loads((SOURCE.parents[1] / "i18n" / "en.json").read_text())
    arabic = json.loads((SOURCE.parents[1] / "i18n" / "ar.json").read_text())
    for _, cause, key in EXPECTED.values():
        for words in (english, arabic):
            node_ = words
            for part in key.split("."):
                node_ = node_[part]
            assert isinstance(node_, str) and node_
            assert words["quality"]["why"][cause]
