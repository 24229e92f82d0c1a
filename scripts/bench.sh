#!/usr/bin/env bash
# make bench: every benchmark with its baseline in the same invocation.
# BENCH_ONLY=ingest,content-scale,fetch,pull,fuse,archives,gc,serve limits the set;
# BENCH_QUICK=1 shrinks inputs. Run as root: the registry scenarios start a
# private containerd, mount overlays and FUSE, and drop the page cache
# before cold runs. Everything listens on 127.0.0.1 only.
set -euo pipefail
cd "$(dirname "$0")/.."
args=(-casfs bin/casfs -out docs/bench.md)
[ -n "${BENCH_ONLY:-}" ] && args+=(-only "$BENCH_ONLY")
[ -n "${BENCH_QUICK:-}" ] && args+=(-quick)
go run ./bench "${args[@]}"
echo "written to docs/bench.md"
