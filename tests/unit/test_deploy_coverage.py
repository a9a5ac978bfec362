"""Every file of deploy/ is used by a test or checked by one: the tests (other than
this one) name each, as ``deploy/<path>`` or as a quoted path relative to deploy/
(``"redis/users.acl"``, ``"jisr.service"`` under deploy/systemd/). A file added to
deploy/ that no test reads fails here until one does."""

from __future__ import annotations

import re
from pathlib import Path

from tests.support.deploy import DEPLOY, SYSTEMD

TESTS = Path(__file__).resolve().parents[1]


def test_every_file_in_deploy_is_named_by_a_test():
    sources = "\n".join(path.read_text() for path in sorted(TESTS.rglob("*.py"))
                        if path.resolve() != Path(__file__).resolve())  # fmt: skip
    files = [p for p in sorted(DEPLOY.rglob("*")) if p.is_file() and "__pycache__" not in p.parts]
    assert files
    unnamed = []
    for path in files:
        names = {path.relative_to(DEPLOY).as_posix()}
        if path.is_relative_to(SYSTEMD):
            names.add(path.relative_to(SYSTEMD).as_posix())
        quoted = "|".join(rf"deploy/{re.escape(n)}(?![\w.-])|[\"']{re.escape(n)}[\"']"
                          for n in names)  # fmt: skip
        if not re.search(quoted, sources):
            unnamed.append(path.relative_to(DEPLOY).as_posix())
    assert unnamed == [], f"files of deploy/ no test uses: {unnamed}"
