#!/usr/bin/env bash
# make bench: every benchmark with its baseline in the same invocation.
# BENCH_ONLY=ingest,content-scale limits the set; BENCH_QUICK=1 shrinks inputs.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-casfs bin/casfs -out bench-results/results.md)
[ -n "${BENCH_ONLY:-}" ] && args+=(-only "$BENCH_ONLY")
[ -n "${BENCH_QUICK:-}" ] && args+=(-quick)
go run ./bench "${args[@]}"
echo "written to bench-results/results.md"
