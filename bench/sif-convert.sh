#!/usr/bin/env bash
# Benchmark: OCI image → SIF, cold and as a patch release, side by side in one run:
#   slipway             `slipway convert REF X.sif --to sif` (the native squashfs writer), from an empty store
#   slipway-mksquashfs  the same with `--squashfs-tool mksquashfs` (the partition built by mksquashfs -tar)
#   apptainer-pipeline  what `apptainer build X.sif docker://REF` runs: `skopeo copy` into an OCI layout,
#                       `umoci unpack`, `mksquashfs ROOTFS X.sqfs -noappend -comp gzip`, `siftool new` + `add`
# All three compress with gzip at level 9 (mksquashfs's default; the native writer's libdeflate at the same
# level) on every core. Page, dentry and inode caches are dropped before every cold run.
#
# Then the patch release: REF's next version (only /version.txt differs) after REF, with what the first
# conversion left: slipway's store (layers and the SIF's block index), the pipeline's OCI layout (skopeo skips
# the blobs it has; umoci, mksquashfs and siftool run again).
#
# Images come from the registry storage bench/etl/build-images.sh fills (WORK/registry): the Patch Tuesday
# images etl:v1 and etl:v2 (Debian minbase + python3, numpy, pandas and the ETL worker).
#
#   bench/sif-convert.sh [--runs N] [--image REPO:TAG] [--next REPO:TAG] [--work DIR] [--slipway BIN]
# Results: bench/results/sif-convert.md and .csv.
set -euo pipefail
cd "$(dirname "$0")/.."
REPO_ROOT=$PWD
RUNS=3
IMAGE=etl:v1
NEXT=etl:v2
WORK=/var/tmp/slipway-etl
SLIPWAY=${SLIPWAY:-$REPO_ROOT/.build/release/slipway}
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --image) IMAGE=$2; shift 2 ;;
    --next) NEXT=$2; shift 2 ;;
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
NEXT_REF=127.0.0.1:$PORT/$NEXT

drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
now() { date +%s.%N; }
elapsed() { echo "$2 - $1" | bc; }
# The squashfs partition of a SIF: "OFFSET SIZE".
partition() { siftool list "$1" | awk '/Squashfs/' | grep -o '[0-9]*-[0-9]*' | head -1 | awk -F- '{print $1, $2 - $1}'; }
CSV=bench/results/sif-convert.csv
echo "run,tool,seconds,squashfs_seconds,sif_bytes,partition_bytes,files,tree_bytes,bytes_compressed,bytes_reused" >"$CSV"

record() { # RUN TOOL SECONDS SQUASHFS_SECONDS SIF [REPORT_JSON]
  local run=$1 tool=$2 seconds=$3 squashfs=$4 sif=$5 report=${6:-} offset size files compressed=, reused=,
  read -r offset size < <(partition "$sif")
  files=$(unsquashfs -lc -o "$offset" "$sif" | wc -l)
  if [[ -n $report ]]; then
    compressed=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])).get("squashfs") or {}; print(s.get("bytesCompressed",""))' "$report")
    reused=$(python3 -c 'import json,sys; s=json.load(open(sys.argv[1])).get("squashfs") or {}; print(s.get("bytesReused",""))' "$report")
  fi
  echo "$run,$tool,$seconds,$squashfs,$(stat -c %s "$sif"),$size,$files,${TREE_BYTES:-},$compressed,$reused" >>"$CSV"
  log "run $run: $tool $seconds s (squashfs $squashfs s)"
}

slipway_convert() { # RUN TOOL STORE REF OUT [ARGS...]
  local run=$1 tool=$2 store=$3 ref=$4 out=$5 start end
  shift 5
  drop_caches
  start=$(now)
  "$SLIPWAY" convert --json --store "$store" "$ref" "$out" --to sif "$@" >"$SCRATCH/report.json"
  end=$(now)
  record "$run" "$tool" "$(elapsed "$start" "$end")" \
    "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["squashfsSeconds"])' "$SCRATCH/report.json")" "$out" "$SCRATCH/report.json"
}

pipeline_convert() { # RUN TOOL REF (into $SCRATCH/layout, which may already hold blobs)
  local run=$1 tool=$2 ref=$3 start end squashfs_start squashfs_end
  rm -rf "$SCRATCH/bundle" "$SCRATCH/rootfs.sqfs" "$SCRATCH/apptainer.sif"
  drop_caches
  start=$(now)
  skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$SCRATCH/layout:img"
  umoci unpack --image "$SCRATCH/layout:img" "$SCRATCH/bundle" >/dev/null
  squashfs_start=$(now)
  mksquashfs "$SCRATCH/bundle/rootfs" "$SCRATCH/rootfs.sqfs" -noappend -comp gzip -quiet -no-progress >/dev/null
  squashfs_end=$(now)
  siftool new "$SCRATCH/apptainer.sif" >/dev/null
  siftool add --datatype 4 --parttype 2 --partfs 1 --partarch 2 --groupid 1 "$SCRATCH/apptainer.sif" "$SCRATCH/rootfs.sqfs" >/dev/null
  end=$(now)
  TREE_BYTES=$(du -sb --apparent-size "$SCRATCH/bundle/rootfs" | cut -f1)
  record "$run" "$tool" "$(elapsed "$start" "$end")" "$(elapsed "$squashfs_start" "$squashfs_end")" "$SCRATCH/apptainer.sif"
}

for run in $(seq "$RUNS"); do
  rm -rf "$SCRATCH/store" "$SCRATCH/layout"
  slipway_convert "$run" slipway "$SCRATCH/store" "$REF" "$SCRATCH/slipway.sif"
  rm -rf "$SCRATCH/store-mksquashfs"
  slipway_convert "$run" slipway-mksquashfs "$SCRATCH/store-mksquashfs" "$REF" "$SCRATCH/slipway-mksquashfs.sif" --squashfs-tool mksquashfs
  pipeline_convert "$run" apptainer-pipeline "$REF"
done

# The patch release, from what the last cold run left.
slipway_convert patch slipway "$SCRATCH/store" "$NEXT_REF" "$SCRATCH/slipway-next.sif"
slipway_convert patch slipway-mksquashfs "$SCRATCH/store-mksquashfs" "$NEXT_REF" "$SCRATCH/slipway-mksquashfs-next.sif" --squashfs-tool mksquashfs
pipeline_convert patch apptainer-pipeline "$NEXT_REF"
# Converting the same image again copies the cached SIF.
start=$(now)
"$SLIPWAY" convert -q --store "$SCRATCH/store" "$NEXT_REF" "$SCRATCH/again.sif" --to sif >/dev/null
end=$(now)
echo "cached,slipway-cached,$(elapsed "$start" "$end"),0,$(stat -c %s "$SCRATCH/again.sif"),,,,," >>"$CSV"

python3 bench/sif_convert_report.py "$CSV" "$REF" "$NEXT_REF" "$(git rev-parse --short HEAD)" >bench/results/sif-convert.md
cat bench/results/sif-convert.md
