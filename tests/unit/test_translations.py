"""The pages' translations (web/i18n): English and Arabic have the same strings, and
every key the pages name literally exists."""

from __future__ import annotations

import json
import re
from pathlib import Path

WEB = Path(__file__).resolve().parents[2] / "web"


def flat(node: dict, prefix: str = "") -> dict[str, str]:
    out: dict[str, str] = {}
    for key, value in node.items():
        if isinstance(value, dict):
            out.update(flat(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def test_english_and_arabic_have_the_same_strings():
    english = flat(json.loads((WEB / "i18n" / "en.json").read_text()))
    arabic = flat(json.loads((WEB / "i18n" / "ar.json").read_text()))
    assert sorted(set(english) ^ set(arabic)) == []
    assert [k for k, v in arabic.items() if not v.strip()] == []


# setText(el, 'a.b'), i18n: ['a.b'], t('a.b'), data-i18n="a.b", announce('a.b'), i18nAttrs
LITERAL = re.compile(
    r"""(?:setText\([^,]+,\s*|i18n:\s*\[|\bt\(|announce\(|data-i18n(?:-[a-z-]+)?=|"""
    r"""'aria-label':\s*|title:\s*)['"]([a-zA-Z][\w]*(?:\.[\w]+)+)['"]"""
)


def test_every_literal_key_exists():
    english = flat(json.loads((WEB / "i18n" / "en.json").read_text()))
    missing, named = set(), set()
    for path in [*WEB.glob("js/*.js"), *WEB.glob("*.html")]:
        for key in LITERAL.findall(path.read_text()):
            named.add(key)
            if key not in english:
                missing.add(f"{path.name}: {key}")
    assert len(named) > 200  # the pattern still finds the pages' keys
    assert sorted(missing) == []


def test_every_key_the_record_pages_use_exists():
    """The past-consults and audit modules name their keys through helpers the
    pattern above does not know."""
    english = flat(json.loads((WEB / "i18n" / "en.json").read_text()))
    used = set()
    for module in ("pastconsults.js", "audit.js"):
        text = (WEB / "js" / module).read_text()
        used |= set(re.findall(r"'((?:past|audit|report)\.[A-Za-z.]+)'", text))
    assert used and sorted(used - set(english)) == []
