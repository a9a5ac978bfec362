"""The quality badge blames the right thing, in real browsers: the referrer's browser
is a busy machine — its camera gives 1080p (an HD camera; the page's request is
widened before the page loads) and its Chromium shares one processor with programs
that keep it busy — while the network is loopback (no loss, a round trip of a few
milliseconds). Its encoder reports it is held back by the processor
(qualityLimitationReason "cpu"), and the page says so: "This device is busy", never
"Poor connection". The specialist's page, whose own machine and network are fine,
does not blame its connection either."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from tests.e2e.test_consult_flow import live_video, open_page, state, wait_until

pytestmark = pytest.mark.e2e

WEB = Path(__file__).resolve().parents[2] / "web"
HD_CAMERA_JS = """
(() => {
  const md = navigator.mediaDevices;
  const ask = md.getUserMedia.bind(md);
  md.getUserMedia = (c) => ask(c && c.video
    ? {...c, video: {width: {exact: 1920}, height: {exact: 1080}, frameRate: {ideal: 30}}}
    : c);
})();
"""
BUSY = "while True:\n    pass\n"


def busy_cpu() -> int:
    """The processor the busy browser and the busy programs share (the last one)."""
    return (os.cpu_count() or 1) - 1


@pytest.fixture
def busy_machine(tmp_path):
    """A Chromium started through this wrapper runs on one processor at a lower
    priority, and two programs keep that processor busy while the test runs."""
    for tool in ("taskset", "nice"):
        if shutil.which(tool) is None:
            pytest.fail(f"{tool} is missing (apt-get install util-linux coreutils)")
    cpu = busy_cpu()
    wrapper = tmp_path / "busy-chromium"
    wrapper.write_text(
        f'#!/bin/sh\nexec taskset -c {cpu} nice -n 5 {shutil.which("chromium")} "$@"\n'
    )
    wrapper.chmod(0o755)
    loops = [
        subprocess.Popen(["taskset", "-c", str(cpu), sys.executable, "-c", BUSY]) for _ in range(2)
    ]
    try:
        yield wrapper
    finally:
        for loop in loops:
            loop.kill()
            loop.wait(5)


def post(server, path: str, token: str, body: dict) -> dict:
    request = urllib.request.Request(
        server.base + path, data=json.dumps(body).encode(), method="POST",
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )  # fmt: skip
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())


def badge(driver) -> dict:
    return driver.execute_script(
        "const b = document.getElementById('connection-quality');"
        "return {cause: b.dataset.cause || null, quality: b.dataset.quality || null,"
        " label: b.querySelector('.quality-label').textContent};"
    )


def test_a_busy_sender_is_told_its_device_is_busy_not_its_connection(
    jisr_server, browsers, busy_machine, record_property
):
    server, tokens = jisr_server, jisr_server.tokens
    words = json.loads((WEB / "i18n" / "en.json").read_text())["quality"]
    poor_connection = {words["level"]["poor"], words["level"]["fair"]}
    referrer = browsers(binary=str(busy_machine))
    specialist = browsers()
    referrer.execute_cdp_cmd("Page.addScriptToEvaluateOnNewDocument", {"source": HD_CAMERA_JS})
    open_page(referrer, server, "referrer", tokens.referrer)
    open_page(specialist, server, "specialist", tokens.specialist)
    for name, driver in (("referrer", referrer), ("specialist", specialist)):
        wait_until(lambda d=driver: state(d)["signaling"] == "ready", 30, f"{name} signaling")
    consult = post(server, "/api/consults", tokens.referrer, {
        "specialty": "cardiology", "urgency": "urgent",
        "summary": "Sent from a busy workstation.", "patient_ref": "P-CPU",
    })  # fmt: skip
    wait_until(
        lambda: specialist.find_elements(
            "css selector", f".accept-button[data-consult-id='{consult['id']}']"
        ),
        15,
        "the consult in the queue",
    )[0].click()
    wait_until(
        lambda: live_video(state(referrer)) and live_video(state(specialist)),
        45,
        "video both ways",
    )
    assert state(referrer)["local"]["videoHeight"] == 1080, state(referrer)["local"]

    # The busy sender: its encoder is held back by the processor; the page says so.
    seen: list[dict] = []

    def told_busy() -> dict | None:
        q = state(referrer)["quality"]
        seen.append({k: q.get(k) for k in ("level", "cause", "limitation", "rttMs", "lossPct",
                                           "sentHeight", "sentFps")})  # fmt: skip
        return q if q.get("cause") == "local_cpu" else None

    q = wait_until(told_busy, 60, "the busy device named as the cause")
    record_property("busy_sender_samples", json.dumps(seen[-6:]))
    assert q["limitation"] == "cpu", q
    assert q["rttMs"] is not None and q["rttMs"] < 150 and (q["lossPct"] or 0) <= 1, q
    shown = badge(referrer)
    assert shown["cause"] == "local_cpu" and shown["label"] == words["cause"]["local_cpu"], shown
    assert shown["label"] not in poor_connection
    # Nowhere is the connection blamed: no network cause on either page.
    for name, driver in (("referrer", referrer), ("specialist", specialist)):
        cause = state(driver)["quality"]["cause"]
        assert cause not in ("loss", "delay"), (name, state(driver)["quality"])
