#!/usr/bin/env bash
# Benchmark: start-up latency of `slipway run IMAGE --entrypoint /bin/true` in each root filesystem mode (unpacked
# overlay of the layer cache, lazy mount, SIF partition) against `runc run` of a bundle that is already unpacked
# (umoci unpack), which is the floor any runtime wrapper pays. Warm: the image is in the store (and its SIF
# built) before the timed runs, as on a node that ran the job before; each run still assembles and tears down
# its root filesystem.
#
#   bench/run-startup.sh [--runs N] [--image REPO:TAG] [--work DIR] [--slipway BIN]
# Results: bench/results/run-startup.md (and .csv). Needs root, runc, umoci, skopeo, jq, and the ETL benchmark
# registry (bench/etl/build-images.sh --sizes small).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
RUNS=20
IMAGE=etl-lazy:small
WORK=/var/tmp/slipway-etl
SLIPWAY=${SLIPWAY:-$REPO_ROOT/.build/release/slipway}
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
source bench/etl/common.sh
ensure_packages docker-registry skopeo umoci runc crun jq squashfs-tools
[[ $(id -u) == 0 ]] || { echo "run as root (runc, overlay and loop mounts)" >&2; exit 2; }
[[ -x $SLIPWAY ]] || { echo "no slipway binary at $SLIPWAY" >&2; exit 2; }

SCRATCH=$(mktemp -d /var/tmp/slipway-run-bench.XXXXXX)
PORT=5094
cleanup() {
  [[ -n ${REGISTRY_PID:-} ]] && kill "$REGISTRY_PID" 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT INT TERM
serve_etl_registry "$WORK" "$PORT" "$SCRATCH"
REF=127.0.0.1:$PORT/$IMAGE
LAZY=127.0.0.1:$PORT/${IMAGE}-esgz
STORE=$SCRATCH/store

log "preparing: pull, layer cache, SIF, a lazy mount's chunk cache, and an unpacked runc bundle"
"$SLIPWAY" run -q --store "$STORE" --runtime runc "$REF" --entrypoint /bin/true
"$SLIPWAY" convert -q --store "$STORE" "$REF" "$SCRATCH/image.sif" --to sif >/dev/null
"$SLIPWAY" run -q --store "$STORE" --runtime runc --mode lazy "$LAZY" --entrypoint /bin/true
skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$SCRATCH/layout:img"
umoci unpack --image "$SCRATCH/layout:img" "$SCRATCH/bundle" >/dev/null
jq '.process.args = ["/bin/true"] | .process.terminal = false' "$SCRATCH/bundle/config.json" >"$SCRATCH/config.json"
mv "$SCRATCH/config.json" "$SCRATCH/bundle/config.json"

CSV=bench/results/run-startup.csv
echo "variant,run,seconds,exit" >"$CSV"
measure() {  # variant, command...
  local variant=$1; shift
  local i start end status
  for i in $(seq "$RUNS"); do
    start=$(date +%s.%N)
    set +e; "$@" >/dev/null 2>&1; status=$?; set -e
    end=$(date +%s.%N)
    echo "$variant,$i,$(echo "$end - $start" | bc),$status" >>"$CSV"
  done
  log "$variant: done"
}
measure "runc run (unpacked bundle)" runc run --bundle "$SCRATCH/bundle" "bench-$$"
for runtime in runc crun; do
  measure "slipway run --mode unpacked ($runtime)" "$SLIPWAY" run -q --store "$STORE" --runtime $runtime "$REF" --entrypoint /bin/true
  measure "slipway run --mode sif ($runtime)" "$SLIPWAY" run -q --store "$STORE" --runtime $runtime --sif "$SCRATCH/image.sif" --entrypoint /bin/true
  measure "slipway run --mode lazy ($runtime)" "$SLIPWAY" run -q --store "$STORE" --runtime $runtime --mode lazy "$LAZY" --entrypoint /bin/true
done

python3 - "$CSV" "$REF" "$(git rev-parse --short HEAD)" "$RUNS" >bench/results/run-startup.md <<'PY'
import csv, statistics, sys, os, platform
rows = list(csv.DictReader(open(sys.argv[1])))
variants = list(dict.fromkeys(r["variant"] for r in rows))
base = statistics.mean(float(r["seconds"]) for r in rows if r["variant"] == variants[0])
print("# Start-up latency: slipway run --entrypoint /bin/true, per root filesystem mode, against runc run\n")
print(f"- image `{sys.argv[2]}` (Debian + python3 + numpy + pandas), slipway at {sys.argv[3]}, {os.cpu_count()} cores, kernel {platform.release()}")
print(f"- warm node: image in the store, layer cache filled, SIF built, lazy chunk cache filled; {sys.argv[4]} runs each; every slipway run assembles and removes its root filesystem")
print("- baseline: `runc run` of a bundle unpacked beforehand with umoci (config.json edited to run /bin/true)\n")
print("| variant | mean (s) | sd | median | failed runs | vs runc run |")
print("|---|---|---|---|---|---|")
for v in variants:
    xs = [float(r["seconds"]) for r in rows if r["variant"] == v]
    failed = sum(1 for r in rows if r["variant"] == v and r["exit"] != "0")
    print(f"| {v} | {statistics.mean(xs):.3f} | {statistics.stdev(xs):.3f} | {statistics.median(xs):.3f} | {failed} | {statistics.mean(xs) / base:.2f}× |")
PY
cat bench/results/run-startup.md
