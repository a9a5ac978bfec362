"""Every page string in both languages: English and Arabic have the same keys, and
every key a page's markup names exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def keys(tree: dict, prefix: str = "") -> set[str]:
    found = set()
    for name, value in tree.items():
        if isinstance(value, dict):
            found |= keys(value, f"{prefix}{name}.")
        else:
            found.add(prefix + name)
    return found


def test_english_and_arabic_have_the_same_keys() -> None:
    en = keys(json.loads((WEB / "i18n" / "en.json").read_text()))
    ar = keys(json.loads((WEB / "i18n" / "ar.json").read_text()))
    assert sorted(en - ar) == [] and sorted(ar - en) == []


def test_every_key_in_the_pages_markup_exists() -> None:
    en = keys(json.loads((WEB / "i18n" / "en.json").read_text()))
    missing = []
    for page in sorted(WEB.glob("*.html")):
        for key in re.findall(r'data-i18n(?:-[a-z-]+)?="([^"]+)"', page.read_text()):
            if key not in en:
                missing.append(f"{page.name}: {key}")
    assert missing == []


def test_every_key_the_new_modules_use_exists() -> None:
    en = keys(json.loads((WEB / "i18n" / "en.json").read_text()))
    used = set()
    for module in ("pastconsults.js", "audit.js"):
        text = (WEB / "js" / module).read_text()
        used |= set(re.findall(r"'((?:past|audit|report)\.[A-Za-z.]+)'", text))
    assert used and sorted(used - en) == []
