"""What a clinician sees, read from the pages in real browsers: the window's size
(set through the DevTools protocol, so the page's viewport is exactly that), the
share of an element inside the window (from the page's layout), the contrast of a
text, the language, and axe-core's accessibility check (tests/support/axe, from the
npm registry, injected into the page)."""

from __future__ import annotations

from pathlib import Path

from selenium.webdriver.common.action_chains import ActionChains
from selenium.webdriver.common.keys import Keys

from tests.e2e.test_consult_flow import wait_until

AXE_JS = (
    Path(__file__).resolve().parents[1] / "support" / "axe" / "node_modules" / "axe-core"
    / "axe.min.js"
)  # fmt: skip

# Desktop, tablet both ways, phone both ways.
SIZES = [(1280, 720), (1024, 768), (768, 1024), (390, 844), (844, 390)]
LANGS = ["en", "ar"]
AXE_TAGS = ["wcag2a", "wcag2aa", "wcag21a", "wcag21aa", "wcag22aa"]


def set_viewport(driver, width: int, height: int) -> None:
    driver.execute_cdp_cmd(
        "Emulation.setDeviceMetricsOverride",
        {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": width < 1000},
    )
    wait_until(
        lambda: driver.execute_script("return [innerWidth, innerHeight]") == [width, height],
        5,
        f"a {width}x{height} window",
    )


# The share (0..1) of each element's box inside the window, below a sticky or fixed top
# bar; its box; and whether the elements overlap a control.
LAYOUT_JS = """
const [selectors, controls] = arguments;
const bar = document.querySelector('.topbar');
let top = 0;
if (bar) {
  const pos = getComputedStyle(bar).position;
  const r = bar.getBoundingClientRect();
  if ((pos === 'sticky' || pos === 'fixed') && r.bottom > 0) top = r.bottom;
}
const box = (el) => { const r = el.getBoundingClientRect();
  return {x: r.left, y: r.top, w: r.width, h: r.height, right: r.right, bottom: r.bottom}; };
// The part of an element left to see: inside the window, below a sticky top bar, and
// inside every ancestor that clips what overflows it (a scrolled control bar, say).
const inside = (r, el) => {
  let [x0, y0, x1, y1] = [Math.max(r.x, 0), Math.max(r.y, top), Math.min(r.right, innerWidth),
    Math.min(r.bottom, innerHeight)];
  for (let a = el.parentElement; a && a !== document.body; a = a.parentElement) {
    const cs = getComputedStyle(a);
    if (cs.overflowX === 'visible' && cs.overflowY === 'visible') continue;
    const c = a.getBoundingClientRect();
    [x0, y0, x1, y1] = [Math.max(x0, c.left), Math.max(y0, c.top), Math.min(x1, c.right),
      Math.min(y1, c.bottom)];
  }
  const w = Math.max(0, x1 - x0), h = Math.max(0, y1 - y0);
  return r.w * r.h > 0 ? (w * h) / (r.w * r.h) : 0;
};
const overlap = (a, b) => a.x < b.right && b.x < a.right && a.y < b.bottom && b.y < a.bottom;
const out = {};
for (const sel of selectors) {
  const el = document.querySelector(sel);
  if (!el || el.getClientRects().length === 0) { out[sel] = null; continue; }
  const r = box(el);
  out[sel] = {visible: Math.round(inside(r, el) * 1000) / 1000, box: r};
}
const ctl = {};
for (const sel of controls) {
  const el = document.querySelector(sel);
  if (!el || el.getClientRects().length === 0) { ctl[sel] = null; continue; }
  const r = box(el);
  ctl[sel] = {visible: Math.round(inside(r, el) * 1000) / 1000,
              overlapsPicture: selectors.some(
                (s) => out[s] && !s.includes('local') && overlap(r, out[s].box))};
}
return {elements: out, controls: ctl, top, scrollY};
"""


def layout(driver, pictures: list[str], controls: list[str]) -> dict:
    return driver.execute_script(LAYOUT_JS, pictures, controls)


def contrast(driver, selector: str) -> float:
    """WCAG contrast ratio of an element's text against its own background colour
    (the element must paint an opaque background)."""
    return driver.execute_script(
        """
        const el = document.querySelector(arguments[0]);
        const cs = getComputedStyle(el);
        const rgb = (c) => c.match(/[\\d.]+/g).slice(0, 3).map(Number);
        const lum = ([r, g, b]) => {
          const f = (v) => {
            v /= 255;
            return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4;
          };
          return 0.2126 * f(r) + 0.7152 * f(g) + 0.0722 * f(b);
        };
        const a = lum(rgb(cs.color)), b = lum(rgb(cs.backgroundColor));
        return (Math.max(a, b) + 0.05) / (Math.min(a, b) + 0.05);
        """,
        selector,
    )


def set_lang(driver, lang: str) -> None:
    if driver.execute_script("return document.documentElement.lang") != lang:
        driver.find_element("id", "lang-toggle").click()
    wait_until(
        lambda: driver.execute_script(
            "return document.documentElement.lang === arguments[0]"
            " && document.documentElement.dir === (arguments[0] === 'ar' ? 'rtl' : 'ltr')",
            lang,
        ),
        5,
        f"the page in {lang}",
    )


def axe_serious(driver) -> list[dict]:
    """axe-core's serious and critical WCAG 2.2 A/AA violations on the page as it is."""
    if not driver.execute_script("return !!window.axe"):
        driver.execute_script(AXE_JS.read_text())
    found = driver.execute_async_script(
        """
        const done = arguments[arguments.length - 1];
        const only = {runOnly: {type: 'tag', values: arguments[0]}, resultTypes: ['violations']};
        axe.run(document, only)
          .then((r) => done(r.violations.map((v) => ({id: v.id, impact: v.impact,
            nodes: v.nodes.slice(0, 4).map((n) => n.target.join(' ') + ' :: '
              + (n.failureSummary || '').replace(/\\s+/g, ' ').slice(0, 240))}))),
            (e) => done([{id: 'axe-error', impact: 'critical', nodes: [String(e)]}]));
        """,
        AXE_TAGS,
    )
    return [v for v in found if v["impact"] in ("serious", "critical")]


class Axe:
    """Runs axe on pages in named states and keeps every serious or critical violation,
    so one run of the test reports all of them."""

    def __init__(self) -> None:
        self.found: dict[str, list[dict]] = {}
        self.checked: list[str] = []

    def check(self, driver, where: str) -> None:
        self.checked.append(where)
        violations = axe_serious(driver)
        if violations:
            self.found[where] = violations

    def both_languages(self, pages: dict, what: str) -> None:
        for lang in LANGS:
            for name, driver in pages.items():
                set_lang(driver, lang)
                self.check(driver, f"{name} {what} ({lang})")
        for driver in pages.values():
            set_lang(driver, "en")


def focused(driver) -> dict:
    return driver.execute_script(
        """
        const el = document.activeElement;
        if (!el || el === document.body) return {tag: 'body'};
        const cs = getComputedStyle(el);
        const r = el.getBoundingClientRect();
        return {tag: el.tagName.toLowerCase(), id: el.id, cls: el.className,
                text: (el.innerText || el.value || '').slice(0, 40),
                outline: cs.outlineStyle !== 'none' && parseFloat(cs.outlineWidth) >= 2,
                inView: r.bottom > 0 && r.top < innerHeight && r.width > 0};
        """
    )


def tab_to(driver, selector: str, *, limit: int = 80, backwards: bool = False) -> dict:
    """Press Tab (or Shift+Tab) until the focused element matches ``selector``; every
    element passed on the way must show its focus (an outline) and be in view."""
    for _ in range(limit):
        if driver.execute_script(
            "return !!document.activeElement && document.activeElement.matches(arguments[0])",
            selector,
        ):
            now = focused(driver)
            assert now["outline"] and now["inView"], (selector, now)
            return now
        chain = ActionChains(driver)
        if backwards:
            chain.key_down(Keys.SHIFT).send_keys(Keys.TAB).key_up(Keys.SHIFT)
        else:
            chain.send_keys(Keys.TAB)
        chain.perform()
        now = focused(driver)
        if now["tag"] != "body":
            assert now["outline"], f"focus not visible on {now} while tabbing to {selector}"
    raise AssertionError(
        f"{selector} not reached by keyboard in {limit} presses; at {focused(driver)}"
    )


def press(driver, *keys: str) -> None:
    ActionChains(driver).send_keys(*keys).perform()
