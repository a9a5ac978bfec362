#!/usr/bin/env bash
# The whole test suite on a fresh machine: installs what the tests need (Debian
# packages when missing, Python packages into .venv), then runs pytest.
# Extra arguments go to pytest, e.g. scripts/test.sh tests/unit -x
set -euo pipefail
cd "$(dirname "$0")/.."

missing=()
command -v redis-server >/dev/null || missing+=(redis-server)
# The media path's C part (media/_wire.c) is compiled when Jisr is installed.
command -v gcc >/dev/null || missing+=(gcc)
python3 -c 'import os, sysconfig; os.stat(sysconfig.get_paths()["include"] + "/Python.h")' \
  2>/dev/null || missing+=(python3-dev)
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v ip >/dev/null || missing+=(iproute2)
command -v turnserver >/dev/null || missing+=(coturn)
command -v nft >/dev/null || missing+=(nftables)
command -v certutil >/dev/null || missing+=(libnss3-tools)
command -v redis-sentinel >/dev/null || missing+=(redis-sentinel)
command -v caddy >/dev/null || missing+=(caddy)
command -v node >/dev/null || missing+=(nodejs)
command -v npm >/dev/null || missing+=(npm)
command -v systemd-analyze >/dev/null || missing+=(systemd)
# The record store's tests start their own PostgreSQL cluster with Debian's binaries.
compgen -G "/usr/lib/postgresql/*/bin/initdb" >/dev/null || missing+=(postgresql)
if ((${#missing[@]})); then
  sudo=""; [ "$(id -u)" = 0 ] || sudo="sudo"
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

[ -x .venv/bin/python ] || python3 -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e '.[test]'
.venv/bin/ruff check .
# The tests' OpenID providers (oidc-provider from the npm registry, on this Node.js).
[ -d tests/support/oidc/node_modules/oidc-provider ] \
  || (cd tests/support/oidc && npm ci --no-audit --no-fund --loglevel=error)
# axe-core (npm registry), injected into the pages by the browser tests to check accessibility.
[ -f tests/support/axe/node_modules/axe-core/axe.min.js ] \
  || (cd tests/support/axe && npm ci --no-audit --no-fund --loglevel=error)

# Keep every test packet on loopback: run in a fresh network namespace when the
# kernel allows it, otherwise in the normal one (the tests use 127.0.0.1 only).
if unshare -n true 2>/dev/null; then
  exec unshare -n sh -c 'ip link set lo up && exec .venv/bin/pytest "$@"' pytest "$@"
fi
exec .venv/bin/pytest "$@"
