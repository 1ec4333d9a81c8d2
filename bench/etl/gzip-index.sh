#!/usr/bin/env bash
# Benchmark "gzip index cost" (`slipway bench gzip-index`): what a seekable gzip index costs, on the ETL images
# of `slipway bench images` (plain gzip layers, as most registries hold them).
#   size    each layer's index blob against the compressed layer (target: at most 2 %)
#   build   `slipway index` over layers already in the store: CPU seconds against `gzip -dc >/dev/null` of the
#           same layers, the plain gunzip it should be close to
#   cache   CPU seconds of the `slipway serve` process while a fresh node pulls etl-lazy:large through it, with
#           and without --index (target: at most 10 % more), runs alternated; the index builds are awaited
# Registry: docker-registry over WORK/registry on 127.0.0.1, unshaped. Results: OUT/gzip-index.json and .md.
#
#   bench/etl/gzip-index.sh [--refs LIST] [--runs N] [--work DIR] [--out DIR] [--slipway BIN]
#     --refs LIST   images (repo:tag) to measure [etl-lazy:small,etl-lazy:medium,etl-lazy:large,etl:v1]
#     --cache-ref R image the cache scenario pulls [etl-lazy:large]
#     --runs N      cache runs per mode [3]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD
INVOCATION="gzip-index $*"
REFS=etl-lazy:small,etl-lazy:medium,etl-lazy:large,etl:v1
CACHE_REF=etl-lazy:large
RUNS=3
WORK=/var/tmp/slipway-etl
OUT=bench/results
SLIPWAY=${SLIPWAY:-}
while (($#)); do
  case $1 in
    --refs) REFS=$2; shift 2 ;;
    --cache-ref) CACHE_REF=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
source bench/etl/common.sh
ensure_packages docker-registry curl gzip
ensure_slipway
SCRATCH=$WORK/gzip-index
rm -rf "$SCRATCH"
mkdir -p "$SCRATCH" "$OUT"
REGISTRY_PID=""
stop_servers() {
  local status=$?
  [[ -n $REGISTRY_PID ]] && kill "$REGISTRY_PID" 2>/dev/null
  pkill -f "serve --upstream http://127.0.0.1:5391" 2>/dev/null
  exit "$status"
}
trap stop_servers EXIT
serve_etl_registry "$WORK" 5391 "$SCRATCH"
python3 bench/etl/gzip_index.py --slipway "$SLIPWAY" --registry 127.0.0.1:5391 --refs "$REFS" --cache-ref "$CACHE_REF" \
  --runs "$RUNS" --scratch "$SCRATCH" --out "$OUT/gzip-index"
python3 bench/etl/write_meta.py "$OUT/gzip-index-meta.json" "$SLIPWAY" "$INVOCATION" --tools gzip,docker-registry
