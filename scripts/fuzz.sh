#!/usr/bin/env bash
# make fuzz: run every `go test -fuzz` target for the given time each.
set -euo pipefail
cd "$(dirname "$0")/.."
time=${1:-60s}
for pkg in $(go list ./...); do
  for target in $(go test -list '^Fuzz' "$pkg" 2>/dev/null | grep '^Fuzz' || true); do
    echo "fuzz: $pkg $target for $time"
    go test -run '^$' -fuzz "^${target}\$" -fuzztime "$time" -fuzzminimizetime 5s "$pkg"
  done
done
