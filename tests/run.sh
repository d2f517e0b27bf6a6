#!/usr/bin/env bash
# Install what the test suite needs, then run it. Used by the README and by .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -r requirements-dev.txt

# Real outside parts, from Debian, installed when missing and we may: chromium for the
# browser tests, mosquitto (an MQTT broker), prometheus (the server and promtool) and curl
# (the documents' examples are run as written).
missing=()
command -v chromium >/dev/null 2>&1 || missing+=(chromium)
command -v curl >/dev/null 2>&1 || missing+=(curl)
{ command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ]; } || missing+=(mosquitto)
command -v promtool >/dev/null 2>&1 || missing+=(prometheus)
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
  else
    echo "note: not installed: ${missing[*]} (apt-get install ${missing[*]}); their tests will be skipped" >&2
  fi
fi

python3 -m ruff check proxy tests bench
python3 -m mypy
# Test files run in parallel processes (a file's tests stay together: they share fixtures such as
# a broker or a browser). Most tests wait on cache windows rather than the CPU, so even a busy
# 2-core machine gains from three. PYTEST_WORKERS=0 runs everything in this process.
python3 -m pytest -n "${PYTEST_WORKERS:-3}" --dist loadfile "$@"
