#!/usr/bin/env bash
# Benchmark "Patch Tuesday" (`slipway bench patch-tuesday`): the ETL worker redeployed v1..vN, where only
# /version.txt changes, by every delivery strategy, cold and warm, over shaped links.
#
# Strategies (bench/etl/deploy.py has the exact commands):
#   containerd     ctr image pull + ctr run (the containerd/Kubernetes path; runc)
#   containerd-slipway  containerd with Slipway's snapshotter: ctr-remote image rpull of the eStargz image +
#                  ctr run (the Kubernetes path with lazy layers)
#   sif-apptainer  skopeo copy + umoci unpack + mksquashfs + siftool, run the SIF (the Apptainer path)
#   sif-slipway    slipway convert --to sif, run the SIF
#   overlay        slipway run (layer cache + overlayfs)
#   lazy           slipway run --mode lazy of the eStargz image (warm: the layers the previous run materialized
#                  are stacked by the kernel's overlay, no FUSE)
#   lazy-profile   the same, cold, with the image's start-up profile in the store (recorded by an earlier,
#                  untimed run on another node that shares the store): the prefetch fetches its files first
#   index          slipway run --mode lazy of the plain image through the cluster's cache (`slipway serve
#                  --index` beside the registry, behind the same link), which indexed every version's layers
#                  while another node pulled them before the deploys: lazy without converting anything
# Caches: cold = an empty node for every deploy (the talk's setting); warm = the node keeps what the previous
# version's deploy left (a node that ran last week's release); warm v1 is cold.
# Each deploy: the worker reads data shards from a host directory bind-mounted at /shared (for NFS), and
# writes its results there; distribution = start until the worker began, run = the worker; bytes = what
# crossed the node's link to the registry. The registry (docker-registry over WORK/registry) runs in a network
# namespace behind a veth pair; its egress is shaped with TBF to the link rate ("none": unshaped veth).
#
# Results: OUT/patch-tuesday.jsonl (one row per deploy; failed deploys are rows with ok=false), .csv,
# patch-tuesday-meta.json, and OUT/report.html (with lazy-vs-full's results if OUT has them).
#
#   bench/etl/patch-tuesday.sh                        # links none,1gbit; 5 versions; 3 runs
#   bench/etl/patch-tuesday.sh --quick                # link none; v1, v2; 1 run
#
# Options:
#   --links LIST       none and/or TBF rates (tc syntax: 1gbit, 100mbit) [none,1gbit]
#   --versions N       deploy v1..vN [5]
#   --runs N           repetitions of each series [3]
#   --strategies LIST  subset of containerd,containerd-slipway,sif-apptainer,sif-slipway,overlay,lazy,lazy-profile,index [all]
#   --caches LIST      cold and/or warm [cold,warm]
#   --quick            --links none --versions 2 --runs 1
#   --repo NAME        repository of the images [etl]
#   --work DIR         where `slipway bench images` keeps the registry storage; scratch [/var/tmp/slipway-etl]
#   --out DIR          results [bench/results]
#   --slipway BIN      this binary instead of building one
#   --timeout S        per deploy [900]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD
INVOCATION="patch-tuesday $*"

LINKS=none,1gbit
VERSIONS=5
RUNS=3
STRATEGIES=containerd,containerd-slipway,sif-apptainer,sif-slipway,overlay,lazy,lazy-profile,index
CACHES=cold,warm
REPO=etl
WORK=/var/tmp/slipway-etl
OUT=bench/results
SLIPWAY=${SLIPWAY:-}
TIMEOUT=900
while (($#)); do
  case $1 in
    --links) LINKS=$2; shift 2 ;;
    --versions) VERSIONS=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --strategies) STRATEGIES=$2; shift 2 ;;
    --caches) CACHES=$2; shift 2 ;;
    --quick) LINKS=none VERSIONS=2 RUNS=1; shift ;;
    --repo) REPO=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "the Patch Tuesday benchmark needs root (network namespaces, tc, mounts, drop_caches)" >&2; exit 1; }
source bench/etl/common.sh
IFS=, read -r -a link_list <<<"$LINKS"
IFS=, read -r -a strategy_list <<<"$STRATEGIES"
IFS=, read -r -a cache_list <<<"$CACHES"
for s in "${strategy_list[@]}"; do
  [[ $s =~ ^(containerd|containerd-slipway|sif-apptainer|sif-slipway|overlay|lazy|lazy-profile|index)$ ]] || { echo "unknown strategy $s" >&2; exit 2; }
done
for c in "${cache_list[@]}"; do [[ $c =~ ^(cold|warm)$ ]] || { echo "unknown cache $c (cold or warm)" >&2; exit 2; }; done
for l in "${link_list[@]}"; do [[ $l == none ]] || link_burst_for "$l" >/dev/null || exit 2; done

ensure_packages docker-registry curl iproute2 fuse3 runc crun skopeo umoci squashfs-tools siftool containerd stargz-snapshotter
require_commands docker-registry:docker-registry tc:iproute2 runc:runc skopeo:skopeo umoci:umoci \
  mksquashfs:squashfs-tools siftool:siftool containerd:containerd ctr:containerd ctr-remote:stargz-snapshotter
[[ -e /dev/fuse ]] || { echo "no /dev/fuse (the lazy strategy needs FUSE)" >&2; exit 1; }
ensure_slipway

RUN_DIR=$WORK/patch-tuesday
clean_up_on_exit

# --- images and data ------------------------------------------------------------------------------------
link_up none
mkdir -p "$RUN_DIR" "$OUT"
start_link_registry "$WORK" "$RUN_DIR"
missing=0
for n in $(seq "$VERSIONS"); do
  curl -fs -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$LINK_REGISTRY/v2/$REPO/manifests/v$n-esgz" || missing=1
done
if ((missing)); then
  kill "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null || true; REGISTRY_PID=""
  log "building the missing images (slipway bench images --versions $VERSIONS)"
  bench/etl/build-images.sh --sizes "" --versions "$VERSIONS" --patch-repo "$REPO" --work "$WORK" --slipway "$SLIPWAY"
  start_link_registry "$WORK" "$RUN_DIR"
fi
image_bytes=$(image_size "$LINK_REGISTRY/$REPO:v1")
log "$REPO:v1 is $image_bytes bytes compressed"

SHARED=$RUN_DIR/shared
write_etl_data "$SHARED" 8 50000 20261129
log "data: $(du -sh "$SHARED/data" | cut -f1) in 8 shards, bind-mounted at /shared"

if [[ " ${strategy_list[*]} " == *" index "* ]]; then
  warm=()
  for n in $(seq "$VERSIONS"); do warm+=("$LINK_CACHE/$REPO:v$n"); done
  start_link_cache "$RUN_DIR" "${warm[@]}"
fi

# --- deploys --------------------------------------------------------------------------------------------
RAW=$OUT/patch-tuesday.jsonl
: >"$RAW"
for link in "${link_list[@]}"; do
  link_up "$link"
  for run in $(seq "$RUNS"); do
    for strategy in "${strategy_list[@]}"; do
      for cache in "${cache_list[@]}"; do
        node=$RUN_DIR/node-$strategy
        rm -rf "$node"
        for n in $(seq "$VERSIONS"); do
          cold=()
          [[ $cache == cold ]] && cold=(--cold)
          host=$LINK_REGISTRY
          [[ $strategy == index ]] && host=$LINK_CACHE
          row=$(python3 bench/etl/deploy.py --strategy "$strategy" --ref "$host/$REPO:v$n" --version "$n" \
            --node "$node" --shared "$SHARED" --slipway "$SLIPWAY" --rx-counter "$(link_rx_counter)" "${cold[@]}" \
            --timeout "$TIMEOUT" --label "link=$link" --label "run=$run" --label "image_bytes=$image_bytes") || true
          [[ -n $row ]] || row="{\"bench\":\"patch-tuesday\",\"link\":\"$link\",\"strategy\":\"$strategy\",\"cache\":\"$cache\",\"version\":$n,\"run\":$run,\"ok\":false,\"error\":\"deploy.py crashed\"}"
          echo "$row" >>"$RAW"
          release_dir "$node"
        done
        rm -rf "$node"
      done
    done
  done
done

# --- results --------------------------------------------------------------------------------------------
python3 bench/etl/rows_to_csv.py "$RAW" "$OUT/patch-tuesday.csv" \
  link,strategy,cache,version,run,ok,t_dist,t_run,t_total,bytes,image_bytes,load1,error
python3 bench/etl/write_meta.py "$OUT/patch-tuesday-meta.json" "$SLIPWAY" "$INVOCATION" \
  --tools containerd,ctr,skopeo,umoci,mksquashfs,siftool,runc,crun \
  --note "links: $LINKS (registry in a network namespace behind a veth pair; TBF on its egress)" \
  --note "Apptainer is not packaged in Debian 12: the Apptainer path is its build pipeline (skopeo, umoci, mksquashfs, siftool), and the SIF runs through slipway run --sif (runc), as Slipway's own SIF does" \
  --note "containerd is a private instance (no CRI plugin): ctr image pull, then ctr run --rm (runc)"
python3 bench/etl/html_report.py "$OUT"
