#!/usr/bin/env bash
# Installs dbt-core and dbt-postgres from PyPI into a virtualenv under .local/dbt-venv (idempotent):
# the reference the dbt-compatibility test (tests/it/models_dbt.rs) compares `etl build-models` with.
# dbt-core is pinned below 1.11: newer releases fetch a parser from outside the package registries.
# Prints the path of the `dbt` executable on its last line.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

venv="${ETL_DBT_VENV:-$PWD/.local/dbt-venv}"
core_spec='dbt-core>=1.10,<1.11'
postgres_spec='dbt-postgres>=1.9,<1.10'

if [[ -x "$venv/bin/dbt" ]] && "$venv/bin/python" - <<'PY' >/dev/null 2>&1
from importlib.metadata import version
major, minor = (int(x) for x in version("dbt-core").split(".")[:2])
assert (major, minor) == (1, 10)
version("dbt-postgres")
PY
then
  echo "$venv/bin/dbt"
  exit 0
fi

python=${PYTHON:-python3}
command -v "$python" >/dev/null || { echo "install-dbt: $python not found; install Python 3.9–3.12" >&2; exit 1; }
mkdir -p "$(dirname "$venv")"
"$python" -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check "$core_spec" "$postgres_spec" >&2
"$venv/bin/dbt" --version >&2
echo "$venv/bin/dbt"
