"""Screenshots of every page at every size, in English and Arabic, for docs/screens/:
``python -m tests.support.screens [--out docs/screens]``.

A real ``jisr serve`` process and three headless Chromium pages with fake cameras
(referrer, specialist, supervisor), on loopback inside a network namespace of its
own when the kernel allows it (as bench.first_picture). A critical consult is
created and the pages are taken at each size (tests/e2e/screen.py's SIZES) and in
each language: the lists with the consult waiting, then the call (the specialist
accepts, the supervisor observes). Files: ``{state}-{page}-{width}x{height}-{lang}.png``
and an index, ``docs/screens/README.md``.
"""

from __future__ import annotations

import argparse
import base64
import io
from pathlib import Path

from PIL import Image

from bench.common import Processes, log, start_jisr
from bench.first_picture import api, browsers, mint, open_page, page_state, wait
from bench.isolation import enter_namespace
from tests.e2e.screen import LANGS, SIZES, set_viewport

ROOT = Path(__file__).resolve().parents[2]
PAGES = ["referrer", "specialist", "supervisor"]
STATES = {"call": "in the call", "list": "the lists, a critical consult waiting"}
# Every size for the call; the lists (a page like any other) at a desktop and a phone.
STATE_SIZES = {"call": SIZES, "list": [(1280, 720), (390, 844)]}


def language(driver, lang: str) -> None:
    if driver.execute_script("return document.documentElement.lang") != lang:
        driver.execute_script("document.getElementById('lang-toggle').click()")
    wait(lambda: driver.execute_script("return document.documentElement.lang") == lang, 5, lang)


def settled(driver) -> bool:
    """Fonts loaded and two animation frames drawn since the last change."""
    return driver.execute_async_script(
        "const done = arguments[arguments.length - 1];"
        "document.fonts.ready.then(() => requestAnimationFrame(() =>"
        " requestAnimationFrame(() => done(true))));"
    )


def shoot(driver, path: Path) -> int:
    settled(driver)
    shot = driver.execute_cdp_cmd(
        "Page.captureScreenshot", {"format": "png", "captureBeyondViewport": False}
    )
    picture = Image.open(io.BytesIO(base64.b64decode(shot["data"]))).convert("RGB")
    # A palette of 128 colours (flat interface colours, a fake camera): a third the bytes.
    small = picture.quantize(colors=128, method=Image.Quantize.MEDIANCUT, dither=Image.Dither.NONE)
    small.save(path, format="PNG", optimize=True)
    return path.stat().st_size


def take(pages: dict, state: str, out: Path, index: list) -> None:
    for lang in LANGS:
        for driver in pages.values():
            language(driver, lang)
        for width, height in STATE_SIZES[state]:
            for name, driver in pages.items():
                set_viewport(driver, width, height)
                driver.execute_script("window.scrollTo(0, 0)")
                file = out / f"{state}-{name}-{width}x{height}-{lang}.png"
                size = shoot(driver, file)
                index.append((state, name, f"{width}x{height}", lang, file.name, size))
                log(f"{file.name}: {size // 1024} KiB")


def into_call(base: str, tokens: dict, pages: dict, consult: dict) -> None:
    specialist, supervisor = pages["specialist"], pages["supervisor"]
    for driver in pages.values():
        set_viewport(driver, 1280, 720)
    selector = f".accept-button[data-consult-id='{consult['id']}']"
    wait(lambda: specialist.find_elements("css selector", selector), 10, "accept")[0].click()
    wait(lambda: supervisor.find_elements("css selector", ".observe-button"), 15, "observe")
    supervisor.find_elements("css selector", ".observe-button")[0].click()

    def pictures() -> bool:
        for driver in pages.values():
            remote = page_state(driver).get("remote") or []
            if not remote or not all(r.get("framesDecoded", 0) > 5 for r in remote):
                return False
        return True

    wait(pictures, 40, "the pictures on every page")
    for driver in pages.values():
        wait(lambda d=driver: page_state(d)["quality"]["level"], 15, "the quality measured")


def write_index(out: Path, index: list) -> None:
    lines = [
        "# What it looks like",
        "",
        "Every page in a call at desktop (1280x720), tablet (1024x768, 768x1024) and phone",
        "(390x844, 844x390) sizes, and the lists at a desktop and a phone, in English and",
        "Arabic, made by `python -m tests.support.screens` (real headless Chromium with a",
        "fake camera; a critical consult, accepted by the specialist, observed by the",
        "supervisor).",
        "",
    ]
    for state, what in STATES.items():
        lines += [f"## {what.capitalize()}", ""]
        for lang in LANGS:
            lines += [f"### {'English' if lang == 'en' else 'Arabic (right to left)'}", ""]
            lines += ["| size | " + " | ".join(PAGES) + " |", "| --- " * (len(PAGES) + 1) + "|"]
            for width, height in STATE_SIZES[state]:
                size = f"{width}x{height}"
                cells = []
                for page in PAGES:
                    name = f"{state}-{page}-{size}-{lang}.png"
                    alt = f"{page}, {what}, {size}, {lang}"
                    cells.append(f'[<img src="{name}" width="200" alt="{alt}">]({name})')
                lines.append(f"| {size} | " + " | ".join(cells) + " |")
            lines.append("")
    total = sum(i[-1] for i in index)
    lines.append(f"{len(index)} screenshots, {total // 1024} KiB in all.")
    (out / "README.md").write_text("\n".join(lines) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default=str(ROOT / "docs" / "screens"))
    args = parser.parse_args()
    reason = enter_namespace("tests.support.screens")
    if reason:
        log(f"running in this network namespace: {reason}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    procs = Processes()
    index: list = []
    try:
        server = start_jisr(procs)
        tokens = {
            "referrer": mint(server.secret, "referrer", "dr-amal", facility="hospital-a"),
            "specialist": mint(server.secret, "specialist", "dr-karim",
                               specialties=["cardiology"]),
            "supervisor": mint(server.secret, "supervisor", "sup-leila"),
        }  # fmt: skip
        with browsers(PAGES) as pages:
            for name, driver in pages.items():
                set_viewport(driver, 1280, 720)
                open_page(driver, server.base, name, tokens[name])
            consult = api(server.base, "/api/consults", tokens["referrer"], {
                "specialty": "cardiology", "urgency": "critical",
                "summary": "Post-CABG day 1: rising lactate, falling pressure, suspected "
                           "tamponade. Echo attached.",
                "patient_ref": "P-2026-0042",
            })  # fmt: skip
            wait(lambda: page_state(pages["specialist"])["queueIds"], 10, "the queue")
            take(pages, "list", out, index)
            into_call(server.base, tokens, pages, consult)
            take(pages, "call", out, index)
    finally:
        procs.stop_all()
    write_index(out, index)
    log(f"{len(index)} screenshots in {out}, {sum(i[-1] for i in index) // 1024} KiB")


if __name__ == "__main__":
    main()
