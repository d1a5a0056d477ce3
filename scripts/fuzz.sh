#!/usr/bin/env bash
# Runs every Fuzz target in the module for the given time each (default 10s).
# Crashers are written by the go tool under the package's testdata/fuzz/.
set -euo pipefail
t=${1:-10s}
cd "$(dirname "$0")/.."
found=0
while IFS= read -r file; do
  pkg="./$(dirname "$file")"
  for fn in $(grep -oE '^func (Fuzz[A-Za-z0-9_]+)' "$file" | awk '{print $2}'); do
    found=$((found+1))
    echo "fuzz: $pkg $fn ($t)"
    go test -run '^$' -fuzz "^${fn}\$" -fuzztime "$t" "$pkg"
  done
done < <(git ls-files '*_test.go' | xargs grep -l '^func Fuzz' | sort)
[ "$found" -gt 0 ] || { echo "fuzz: no fuzz targets found" >&2; exit 1; }
echo "fuzz: $found targets ran for $t each"
