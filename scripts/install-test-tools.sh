#!/usr/bin/env bash
# Tools the serve tests need beyond a Rust toolchain, installed only where missing (idempotent):
#   - Debian's chromium and chromium-driver, for the dashboard's browser test (tests/it/serve.rs);
#   - wrk, for `just bench-serve`;
#   - a Python virtualenv under .local/venv with schemathesis, for scripts/contract-check.sh
#     (Debian's python3-venv when Python cannot make one), and curl, which that script uses.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

missing=()
command -v chromium >/dev/null || missing+=(chromium)
command -v chromedriver >/dev/null || missing+=(chromium-driver)
command -v wrk >/dev/null || missing+=(wrk)
command -v curl >/dev/null || missing+=(curl)
venv=.local/venv
if [[ ! -x $venv/bin/schemathesis ]] && ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
  missing+=(python3 python3-venv)
fi
if ((${#missing[@]})); then
  sudo=""
  [[ $(id -u) -eq 0 ]] || sudo="sudo"
  echo "installing ${missing[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if [[ ! -x $venv/bin/schemathesis ]]; then
  echo "installing schemathesis into $venv"
  mkdir -p .local
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check 'schemathesis>=4,<5'
fi
echo "test tools: $(command -v chromium), $(command -v chromedriver), $(command -v wrk), $venv/bin/schemathesis"
