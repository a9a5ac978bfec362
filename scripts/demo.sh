#!/usr/bin/env bash
# Installs Jisr into .venv and starts a single-node demo on http://127.0.0.1:8080
# with the in-process store; prints a signed-in link for each kind of user, and the
# same over HTTPS on port 8443 of the machine's network addresses (another computer).
set -euo pipefail
cd "$(dirname "$0")/.."
# The media path's C part (media/_wire.c) is compiled when Jisr is installed.
if ! command -v gcc >/dev/null \
  || ! python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' 2>/dev/null; then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends gcc python3-dev >/dev/null
fi
[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
exec .venv/bin/jisr serve --demo "$@"
