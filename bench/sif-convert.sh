#!/usr/bin/env bash
# Benchmark: OCI image → SIF. `slipway convert REF X.sif --to sif` (cold store every run) against the pipeline
# Apptainer runs for `apptainer build X.sif docker://REF`: fetch into an OCI layout (skopeo copy), unpack every
# layer into a root directory (umoci unpack), `mksquashfs ROOTFS X.sqfs -noappend -comp gzip`, and assemble the
# SIF (siftool new + add, primary squashfs partition). Both use mksquashfs with gzip at its default level and
# every core, so the compression is the same.
#
# The image is the ETL benchmark's etl-lazy:small (Debian minbase + python3, numpy, pandas, the worker and a
# 16 MiB asset), served from the registry storage bench/etl/build-images.sh fills (WORK/registry).
#
#   bench/sif-convert.sh [--runs N] [--image REPO:TAG] [--work DIR] [--slipway BIN]
# Results: bench/results/sif-convert.md (and .csv).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
RUNS=3
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
ensure_packages docker-registry skopeo umoci squashfs-tools siftool
[[ -x $SLIPWAY ]] || { echo "no slipway binary at $SLIPWAY (swift build -c release --product slipway)" >&2; exit 2; }

SCRATCH=$(mktemp -d /var/tmp/slipway-sif-bench.XXXXXX)
PORT=5093
cleanup() {
  [[ -n ${REGISTRY_PID:-} ]] && kill "$REGISTRY_PID" 2>/dev/null || true
  rm -rf "$SCRATCH"
}
trap cleanup EXIT INT TERM
serve_etl_registry "$WORK" "$PORT" "$SCRATCH"
REF=127.0.0.1:$PORT/$IMAGE

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
CSV=bench/results/sif-convert.csv
echo "run,tool,seconds,sif_bytes,partition_bytes,files" >"$CSV"

for run in $(seq "$RUNS"); do
  # slipway: a cold store every run (pull, layer extraction and squashfs all counted).
  rm -rf "$SCRATCH/store" "$SCRATCH/slipway.sif"
  drop_caches
  start=$(now)
  "$SLIPWAY" convert -q --store "$SCRATCH/store" "$REF" "$SCRATCH/slipway.sif" --to sif >/dev/null
  end=$(now)
  offset=$(siftool list "$SCRATCH/slipway.sif" | awk '/Squashfs/ {print $0}' | grep -o '[0-9]*-[0-9]*' | head -1 | cut -d- -f1)
  part=$(siftool list "$SCRATCH/slipway.sif" | awk '/Squashfs/ {print $0}' | grep -o '[0-9]*-[0-9]*' | head -1 | awk -F- '{print $2-$1}')
  files=$(unsquashfs -lc -o "$offset" "$SCRATCH/slipway.sif" | wc -l)
  echo "$run,slipway,$(echo "$end - $start" | bc),$(stat -c %s "$SCRATCH/slipway.sif"),$part,$files" >>"$CSV"
  log "run $run: slipway convert $(echo "$end - $start" | bc) s"

  # Apptainer's pipeline.
  rm -rf "$SCRATCH/layout" "$SCRATCH/bundle" "$SCRATCH/rootfs.sqfs" "$SCRATCH/apptainer.sif"
  drop_caches
  start=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$REF" "oci:$SCRATCH/layout:img"
  umoci unpack --image "$SCRATCH/layout:img" "$SCRATCH/bundle" >/dev/null
  mksquashfs "$SCRATCH/bundle/rootfs" "$SCRATCH/rootfs.sqfs" -noappend -comp gzip -quiet -no-progress >/dev/null
  siftool new "$SCRATCH/apptainer.sif" >/dev/null
  siftool add --datatype 4 --parttype 2 --partfs 1 --partarch 2 --groupid 1 "$SCRATCH/apptainer.sif" "$SCRATCH/rootfs.sqfs" >/dev/null
  end=$(now)
  files=$(unsquashfs -lc "$SCRATCH/rootfs.sqfs" | wc -l)
  echo "$run,apptainer-pipeline,$(echo "$end - $start" | bc),$(stat -c %s "$SCRATCH/apptainer.sif"),$(stat -c %s "$SCRATCH/rootfs.sqfs"),$files" >>"$CSV"
  log "run $run: skopeo + umoci + mksquashfs + siftool $(echo "$end - $start" | bc) s"
done

# A second conversion of the same image comes from the store's SIF cache.
start=$(now)
"$SLIPWAY" convert -q --store "$SCRATCH/store" "$REF" "$SCRATCH/again.sif" --to sif >/dev/null
end=$(now)
echo "cached,slipway-cached,$(echo "$end - $start" | bc),$(stat -c %s "$SCRATCH/again.sif"),," >>"$CSV"

python3 - "$CSV" "$REF" "$(git rev-parse --short HEAD)" >bench/results/sif-convert.md <<'PY'
import csv, statistics, sys, platform, os
rows = list(csv.DictReader(open(sys.argv[1])))
def stats(tool):
    xs = [float(r["seconds"]) for r in rows if r["tool"] == tool]
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0), xs
s_mean, s_sd, s_runs = stats("slipway")
a_mean, a_sd, a_runs = stats("apptainer-pipeline")
c = [r for r in rows if r["tool"] == "slipway-cached"][0]
last = {r["tool"]: r for r in rows if r["run"] != "cached"}
print("# OCI → SIF: slipway convert --to sif vs Apptainer's pipeline\n")
print(f"- image: `{sys.argv[2]}`; slipway at {sys.argv[3]}; {os.cpu_count()} cores; kernel {platform.release()}")
print("- page, dentry and inode caches dropped before every run; slipway starts from an empty store every run")
print("- pipeline: `skopeo copy` → `umoci unpack` → `mksquashfs ROOTFS X.sqfs -noappend -comp gzip` → `siftool new` + `siftool add` (primary squashfs partition)\n")
print("| tool | mean ± sd (s) | runs (s) | SIF bytes | squashfs bytes | files |")
print("|---|---|---|---|---|---|")
print(f"| slipway convert --to sif | {s_mean:.2f} ± {s_sd:.2f} | {', '.join(f'{x:.2f}' for x in s_runs)} | {last['slipway']['sif_bytes']} | {last['slipway']['partition_bytes']} | {last['slipway']['files']} |")
print(f"| skopeo + umoci + mksquashfs + siftool | {a_mean:.2f} ± {a_sd:.2f} | {', '.join(f'{x:.2f}' for x in a_runs)} | {last['apptainer-pipeline']['sif_bytes']} | {last['apptainer-pipeline']['partition_bytes']} | {last['apptainer-pipeline']['files']} |")
print(f"| slipway, second conversion (store cache) | {float(c['seconds']):.2f} | | {c['sif_bytes']} | | |")
print(f"\n**time ratio slipway / pipeline: {s_mean / a_mean:.2f}×**; size ratio {int(last['slipway']['sif_bytes']) / int(last['apptainer-pipeline']['sif_bytes']):.3f}")
PY
cat bench/results/sif-convert.md
