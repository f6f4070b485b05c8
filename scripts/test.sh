#!/usr/bin/env bash
# Installs what the tests need and runs them. CI calls this exact script (see .ci/run).
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install -q -e ".[test]"
# torchattacks pins requests~=2.25 and would drag Streamlit back to 1.27: install it without deps.
python -m pip install -q --no-deps "torchattacks==3.5.1"
# The browser test drives Debian's Chromium (never a downloaded browser).
if ! command -v chromium >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq chromium fonts-liberation) >/dev/null 2>&1 || echo "note: could not install chromium; the browser test will say so"
fi
export FOSC_DATA_ROOT="${FOSC_DATA_ROOT:-$(cd .. && pwd)/shared/data}"
python -m pytest "$@"
