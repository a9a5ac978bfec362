"""Time to first picture: ``python -m bench.first_picture [--runs 5] [--json]``.

A real ``jisr serve`` process (one node, in-process store) and two headless
Chromium pages with fake cameras (the referrer's and the specialist's), everything
on loopback, inside a network namespace of its own when the kernel allows it. Each
run: the referrer's consult is created (HTTP), the specialist page's Accept is
clicked, and the time runs from that click to the first remote frame presented on
each page. Where it goes comes from the pages' own marks (web/js/timeline.js,
milliseconds since the epoch, so the two pages compare): the HTTP accept, the push
to the referrer, the join, ``getUserMedia``, the offer, ICE gathering, the answer,
ICE and DTLS, the first frame. Then the session is ended and both pages go back to
their lists for the next run.

Baseline, side by side in the same browser: two RTCPeerConnections in one page
calling each other over loopback with no server at all (``getUserMedia`` → offer →
answer → ICE → DTLS → first frame): what the browser alone needs.

``--json`` prints ``{"runs", "specialist_median_s", "referrer_median_s",
"baseline_median_s", "breakdown", "machine", ...}`` as the last line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator

from .common import Processes, http_json, log, machine_line, start_jisr, table
from .common import machine as common_machine
from .isolation import enter_namespace

CHROMIUM_FLAGS = [
    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
    "--use-fake-ui-for-media-stream", "--use-fake-device-for-media-stream",
    "--autoplay-policy=no-user-gesture-required", "--allow-loopback-in-peer-connection",
    "--disable-features=WebRtcHideLocalIpsWithMdns", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--disable-default-apps",
    "--disable-extensions", "--no-first-run", "--no-default-browser-check", "--disable-quic",
    "--window-size=1280,720",
    "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE localhost, EXCLUDE 127.0.0.1",
]  # fmt: skip
# Each page's marks in the order they happen, and what the step between two is; the
# join and call steps are both pages'.
JOIN_STEPS = [("join.sent", "to the join"), ("join.answered", "join answered")]
CALL_STEPS = [
    ("offer.created", "offer created"),
    ("ice.gathered", "first ICE candidates"),
    ("offer.sent", "offer sent"),
    ("answer.applied", "answer applied"),
    ("ice.connected", "ICE connected"),
    ("dtls.connected", "DTLS connected"),
    ("frame.first", "first frame shown"),
]
STEPS = {
    "specialist": [
        ("accept.answered", "HTTP accept"),
        *JOIN_STEPS,
        ("media.ready", "camera (getUserMedia, from the click)"),
        *CALL_STEPS,
    ],
    "referrer": [
        ("accepted.push", "push of the accept"),
        *JOIN_STEPS,
        ("media.ready", "camera (getUserMedia)"),
        *CALL_STEPS,
    ],
}
STATE_JS = "const done = arguments[arguments.length - 1]; window.jisr.state().then(done);"
BASELINE_JS = """
const done = arguments[arguments.length - 1];
(async () => {
  const t0 = performance.now();
  const stream = await navigator.mediaDevices.getUserMedia({audio: true,
    video: {width: {ideal: 640}, height: {ideal: 480}}});
  const a = new RTCPeerConnection(), b = new RTCPeerConnection();
  a.onicecandidate = (e) => e.candidate && b.addIceCandidate(e.candidate);
  b.onicecandidate = (e) => e.candidate && a.addIceCandidate(e.candidate);
  for (const t of stream.getTracks()) a.addTrack(t, stream);
  const video = document.createElement('video');
  video.muted = true; video.autoplay = true; video.playsInline = true;
  document.body.append(video);
  const first = new Promise((r) => video.requestVideoFrameCallback(() => r(performance.now())));
  b.ontrack = (e) => { video.srcObject = e.streams[0]; video.play().catch(() => {}); };
  await a.setLocalDescription(await a.createOffer());
  await b.setRemoteDescription(a.localDescription);
  await b.setLocalDescription(await b.createAnswer());
  await a.setRemoteDescription(b.localDescription);
  const t1 = await first;
  for (const t of stream.getTracks()) t.stop();
  a.close(); b.close(); video.remove();
  done({ms: t1 - t0});
})().catch((e) => done({error: String(e)}));
"""


def machine() -> dict:
    info = common_machine()
    chromium = shutil.which("chromium")
    if chromium:
        out = subprocess.run([chromium, "--version"], capture_output=True, text=True).stdout
        info["chromium"] = out.strip().splitlines()[-1] if out.strip() else "unknown"
    info["load_average"] = os.getloadavg()
    return info


def mint(secret: str, role: str, sub: str, **claims) -> str:
    from signaling.auth import mint_token
    from signaling.settings import load_settings

    settings = load_settings(jwt_secret=secret, ice_addresses="127.0.0.1", port=8080)
    return mint_token(settings, role=role, sub=sub, name=sub.upper(), **claims)


def api(base: str, path: str, token: str, body: dict | None = None) -> dict:
    return http_json("POST", base + path, body or {}, token)


def browser(folders: list):
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    folder = tempfile.TemporaryDirectory(prefix="jisr-bench-chromium-")
    folders.append(folder)
    options = webdriver.ChromeOptions()
    options.binary_location = shutil.which("chromium")
    for flag in (*CHROMIUM_FLAGS, f"--user-data-dir={folder.name}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(
        options=options, service=Service(executable_path=shutil.which("chromedriver"))
    )
    driver.set_script_timeout(30)
    return driver


@contextlib.contextmanager
def browsers(names) -> Iterator[dict]:
    """A headless Chromium for each name; all quit, and their profiles removed, after."""
    folders: list = []
    pages: dict = {}
    try:
        for name in names:
            pages[name] = browser(folders)
        yield pages
    finally:
        for driver in pages.values():
            driver.quit()
        for folder in folders:
            folder.cleanup()


def page_state(driver) -> dict:
    return driver.execute_async_script(STATE_JS)


def wait(check, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        got = check()
        if got:
            return got
        time.sleep(0.02)
    raise TimeoutError(f"timed out after {timeout} s waiting for {what}")


def open_page(driver, base: str, page: str, token: str) -> None:
    driver.get(f"{base}/{page}.html#token={token}")
    wait(lambda: driver.execute_script("return !!window.jisr"), 20, f"the {page} page")
    wait(lambda: (s := page_state(driver))["ready"] and s["signaling"] == "ready", 20, page)


def one_run(base: str, tokens: dict, pages: dict, n: int) -> dict:
    """One consult from the accept click to both first frames; the session ended after."""
    specialist = pages["specialist"]
    consult = api(base, "/api/consults", tokens["referrer"], {
        "specialty": "cardiology", "urgency": "critical",
        "summary": f"Benchmark run {n}.", "patient_ref": f"P-BENCH-{n}",
    })  # fmt: skip
    selector = f".accept-button[data-consult-id='{consult['id']}']"
    button = wait(
        lambda: specialist.find_elements("css selector", selector), 10, "the accept button"
    )[0]
    button.click()
    marks = wait(
        lambda: (
            all("frame.first" in (t := {n: page_state(d)["timeline"] for n, d in pages.items()})[p]
                for p in pages) and t
        ),
        30,
        "the first frame on both pages",
    )  # fmt: skip
    session_id = page_state(specialist)["sessionId"]
    api(base, f"/api/sessions/{session_id}/end", tokens["specialist"])
    for driver in pages.values():
        wait(lambda d=driver: page_state(d)["ended"], 10, "the end")
        driver.execute_script("document.getElementById('session-back').click()")
        wait(lambda d=driver: not page_state(d)["inSession"], 10, "back at the list")
    return marks


def breakdown(runs: list[dict]) -> dict:
    """Per page: each mark's median time after the accept click, and the step before it."""
    out = {}
    for page, steps in STEPS.items():
        rows = []
        for mark, label in steps:
            after = [(r[page][mark] - r["specialist"]["accept.click"]) / 1000
                     for r in runs if mark in r[page]]  # fmt: skip
            median = round(statistics.median(after), 3) if after else None
            rows.append({"mark": mark, "step": label, "median_s": median})
        out[page] = rows
    return out


def baseline(driver, runs: int) -> list[float]:
    out = []
    for _ in range(runs):
        got = driver.execute_async_script(BASELINE_JS)
        if "error" in got:
            raise RuntimeError(f"baseline call failed: {got['error']}")
        out.append(got["ms"] / 1000)
    return out


def report(runs: list[dict], base_times: list[float], info: dict) -> dict:
    def total(page: str) -> list[float]:
        return [(r[page]["frame.first"] - r["specialist"]["accept.click"]) / 1000 for r in runs]

    spec, ref = total("specialist"), total("referrer")
    print(machine_line(info) + f", {info.get('chromium', 'Chromium ?')}")
    print(f"load average at start {info['load_average'][0]:.2f}, at end {os.getloadavg()[0]:.2f}")
    rows = [[i + 1, f"{s:.3f}", f"{r:.3f}", f"{b:.3f}"]
            for i, (s, r, b) in enumerate(zip(spec, ref, base_times, strict=False))]  # fmt: skip
    print("\naccept click -> first remote frame (s); baseline: browser-to-browser, no server")
    print(table(["run", "specialist", "referrer", "baseline"], rows))
    medians = {"specialist_median_s": round(statistics.median(spec), 3),
               "referrer_median_s": round(statistics.median(ref), 3),
               "baseline_median_s": round(statistics.median(base_times), 3)}  # fmt: skip
    print(f"\nmedians: {medians}")
    steps = breakdown(runs)
    for page, rows_ in steps.items():
        print(f"\n{page} page, median time after the accept click")
        print(table(["mark", "after click (s)", "step"],
                    [[r["mark"], r["median_s"], r["step"]] for r in rows_]))  # fmt: skip
    click = [r["specialist"]["accept.click"] for r in runs]
    per_run = [{page: {m: round((t - c) / 1000, 3) for m, t in r[page].items()}
                for page in ("specialist", "referrer")}
               for r, c in zip(runs, click, strict=True)]  # fmt: skip
    return {"runs": len(runs), **medians, "per_run": per_run, "specialist_s": spec,
            "referrer_s": ref, "baseline_s": base_times, "breakdown": steps, "machine": info,
            "load_average_end": os.getloadavg()[0]}  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    reason = enter_namespace("bench.first_picture")
    if reason:
        log(f"running in this network namespace: {reason}")
    info = machine()
    procs = Processes()
    try:
        server = start_jisr(procs)
        tokens = {"referrer": mint(server.secret, "referrer", "dr-amal", facility="hospital-a"),
                  "specialist": mint(server.secret, "specialist", "dr-karim",
                                     specialties=["cardiology"])}  # fmt: skip
        with browsers(("specialist", "referrer")) as pages:
            for name, driver in pages.items():
                open_page(driver, server.base, name, tokens[name])
            runs = []
            for n in range(args.runs):
                runs.append(one_run(server.base, tokens, pages, n + 1))
                log(f"run {n + 1}: done")
            base_times = baseline(pages["referrer"], args.runs)
    finally:
        procs.stop_all()
    result = report(runs, base_times, info)
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
