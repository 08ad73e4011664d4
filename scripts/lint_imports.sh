#!/usr/bin/env bash
# Checks the import-linter contracts in pyproject.toml ([tool.importlinter]) on eeopt as it is
# installed: passes/ and kernels/ are eeopt.passes and eeopt.kernels (pyproject's package-dir),
# so lint-imports reads a tree of links with them in place (build/import-graph/eeopt); run from
# the repository root, lint-imports alone would not see them.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PY:-python3}"
root="$PWD"
farm="$root/build/import-graph"
rm -rf "$farm"
mkdir -p "$farm/eeopt"
for entry in eeopt/*; do
  case "$entry" in */__pycache__) continue ;; esac
  ln -s "$root/$entry" "$farm/eeopt/"
done
ln -s "$root/passes" "$farm/eeopt/passes"
ln -s "$root/kernels" "$farm/eeopt/kernels"
cd "$farm"
# lint-imports, run by the Python that has eeopt installed (the console script may be another's)
PYTHONPATH="$farm" "$PY" -c 'import sys; from importlinter.cli import lint_imports_command
sys.argv[0] = "lint-imports"; lint_imports_command()' --no-cache "$root/pyproject.toml"
