#!/usr/bin/env bash
# Benchmark "Lazy vs Full pull" (`slipway bench lazy-vs-full`): time to each checkpoint of the 3-stage ETL
# worker, full pulls against lazy mounts, cold every run, over shaped links.
#
# Variants (images from `slipway bench images`, built first if the registry lacks them):
#   full          `slipway unpack REPO:SIZE DIR` (plain gzip), then the worker chrooted in DIR
#   containerd    `ctr image pull REPO:SIZE` + `ctr run` (a private containerd; skipped if not installed)
#   containerd-slipway  the same containerd with Slipway's snapshotter (`slipway snapshotter`, default --prefetch
#                 all): `ctr-remote image rpull --snapshotter slipway REPO:SIZE-esgz-opt` + `ctr run --snapshotter
#                 slipway` (eStargz layers mounted lazily; skipped without ctr-remote)
#   esgz-none     `slipway mount --prefetch none REPO:SIZE-esgz`, worker in the mount
#   opt-landmark  `slipway mount --prefetch landmark REPO:SIZE-esgz-opt`
#   esgz-all      `slipway mount REPO:SIZE-esgz` (Slipway's default, --prefetch all)
#   esgz-profile  the same, with the image's start-up profile in the store (the workload's files as
#                 WORK/record-SIZE.txt has them, recorded once by `slipway bench images`): the plain eStargz
#                 image, not rebuilt, whose first run on a node that shares the store left its profile
#   opt-all       `slipway mount REPO:SIZE-esgz-opt` (default --prefetch all)
#   index         `slipway mount CACHE/REPO:SIZE` (default --prefetch all): the plain gzip image, never converted,
#                 mounted lazily through the gzip index that the cluster's cache (`slipway serve --index`, beside
#                 the registry behind the same link) built while another node pulled the image before the runs
#   index-opt     `slipway mount REPO-indexed:SIZE`: the same plain image (copied to REPO-indexed) with an index
#                 pushed next to it by `slipway index --push --prioritize WORK/record-SIZE.txt` (the workload's
#                 files, recorded once by `slipway bench images`): optimizing start-up by pushing a small index
# containerd with the stargz snapshotter cannot run here: Debian 12's stargz-snapshotter package ships
# ctr-remote but not the containerd-stargz-grpc daemon; the report says so.
# Per run: fresh store, sync and drop_caches, then the clock starts (bench/etl/measure.py). Checkpoint times
# come from the worker's own timestamps; bytes at each checkpoint from the rx counter of the node's link to the
# registry (link_bytes_*), and Slipway's own accounting (bytes_*).
#
# Links: the registry (docker-registry over WORK/registry) runs in a network namespace behind a veth pair whose
# registry end is shaped with TBF to the given rate; "none" leaves it unshaped.
#
# Results: OUT/NAME.jsonl (one row per run; failed runs are rows with ok=false), NAME.csv, NAME.md,
# NAME-images.json, NAME-meta.json, and OUT/report.html (with Patch Tuesday's results if OUT has them).
#
#   bench/etl/lazy-vs-full.sh                       # small,medium,large x none,1gbit x 7 variants x 3 runs
#   bench/etl/lazy-vs-full.sh --quick               # small x none x 1 run
#
# Options:
#   --sizes LIST        small, medium, large [small,medium,large]
#   --runs N            cold runs per size, link and variant [3]
#   --links LIST        none and/or TBF rates (tc syntax: 1gbit, 100mbit, ...) [none,1gbit]
#   --variants LIST     subset of full,containerd,containerd-slipway,esgz-none,opt-landmark,esgz-all,esgz-profile,opt-all,
#                       index,index-opt [all]
#   --quick             --sizes small --links none --runs 1
#   --repo NAME         repository [etl-lazy]
#   --work DIR          where `slipway bench images` keeps the registry storage; scratch [/var/tmp/slipway-etl]
#   --out DIR           results [bench/results]
#   --name NAME         base name of the result files [lazy-vs-full]
#   --slipway BIN       use this binary instead of building one
#   --no-follow         do not wait, after CP3, for the background prefetch of --prefetch all to finish
#                       (by default the run also reports when the whole image was local: t_all_local)
#   --timeout S         per run [900]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD
INVOCATION="lazy-vs-full $*"

SIZES=small,medium,large
RUNS=3
LINKS=none,1gbit
VARIANTS=full,containerd,containerd-slipway,esgz-none,opt-landmark,esgz-all,opt-all,index,index-opt
REPO=etl-lazy
WORK=/var/tmp/slipway-etl
OUT=bench/results
NAME=lazy-vs-full
SLIPWAY=${SLIPWAY:-}
FOLLOW=1
TIMEOUT=900
while (($#)); do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --links) LINKS=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --quick) SIZES=small LINKS=none RUNS=1; shift ;;
    --repo) REPO=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --no-follow) FOLLOW=0; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "the lazy-vs-full benchmark needs root (FUSE, chroot, drop_caches, network namespaces)" >&2; exit 1; }
[[ -e /dev/fuse ]] || { echo "no /dev/fuse (lazy mounts need FUSE)" >&2; exit 1; }
source bench/etl/common.sh

IFS=, read -r -a size_list <<<"$SIZES"
IFS=, read -r -a link_list <<<"$LINKS"
IFS=, read -r -a variant_list <<<"$VARIANTS"
for l in "${link_list[@]}"; do [[ $l == none ]] || link_burst_for "$l" >/dev/null || exit 2; done
declare -A spec=(
  [full]="full:all:"          [containerd]="containerd:all:" [containerd-slipway]="containerd-slipway:all:-esgz-opt"
  [esgz-none]="lazy:none:-esgz"
  [opt-landmark]="lazy:landmark:-esgz-opt" [esgz-all]="lazy:all:-esgz" [esgz-profile]="lazy:all:-esgz" [opt-all]="lazy:all:-esgz-opt"
  [index]="lazy:all:" [index-opt]="lazy:all:")
for v in "${variant_list[@]}"; do [[ -n ${spec[$v]:-} ]] || { echo "unknown variant $v" >&2; exit 2; }; done
NOTES=()
drop_variant() { # NAME NOTE: leaves NAME out of the runs, saying why in the report
  local kept=() v
  for v in "${variant_list[@]}"; do [[ $v == "$1" ]] || kept+=("$v"); done
  if ((${#kept[@]} != ${#variant_list[@]})); then NOTES+=("$2"); fi
  variant_list=("${kept[@]}")
}
command -v ctr >/dev/null || drop_variant containerd "containerd is not installed (apt-get install containerd): its variant was skipped"
command -v ctr >/dev/null || drop_variant containerd-slipway "containerd is not installed (apt-get install containerd): the containerd-slipway variant was skipped"
command -v ctr-remote >/dev/null ||
  drop_variant containerd-slipway "ctr-remote is not installed (apt-get install stargz-snapshotter): the containerd-slipway variant was skipped"
command -v containerd-stargz-grpc >/dev/null ||
  NOTES+=("containerd + stargz-snapshotter not run: Debian 12's stargz-snapshotter ships ctr-remote but not the containerd-stargz-grpc daemon it needs")

ensure_packages docker-registry curl fuse3 iproute2
require_commands docker-registry:docker-registry tc:iproute2 curl:curl
ensure_slipway

RUN_DIR=$WORK/lazy-vs-full
clean_up_on_exit

# --- images: build what is missing ----------------------------------------------------------------------
have_tag() { curl -fs -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$LINK_REGISTRY/v2/$REPO/manifests/$1"; }
mkdir -p "$RUN_DIR" "$OUT"
link_up none
start_link_registry "$WORK" "$RUN_DIR"
missing=()
for size in "${size_list[@]}"; do have_tag "$size-esgz-opt" || missing+=("$size"); done
if ((${#missing[@]})); then
  kill "$REGISTRY_PID"; wait "$REGISTRY_PID" 2>/dev/null || true; REGISTRY_PID=""
  sizes_to_build=$(IFS=,; echo "${missing[*]}")
  log "building the missing images (slipway bench images --sizes $sizes_to_build --versions 0)"
  bench/etl/build-images.sh --sizes "$sizes_to_build" --versions 0 --repo "$REPO" --work "$WORK" --slipway "$SLIPWAY"
  start_link_registry "$WORK" "$RUN_DIR"
fi

if [[ " ${variant_list[*]} " == *" index "* ]]; then
  warm=()
  for size in "${size_list[@]}"; do warm+=("$LINK_CACHE/$REPO:$size"); done
  start_link_cache "$RUN_DIR" "${warm[@]}"
fi
if [[ " ${variant_list[*]} " == *" index-opt "* ]]; then
  for size in "${size_list[@]}"; do
    [[ -s $WORK/record-$size.txt ]] || { echo "no $WORK/record-$size.txt (slipway bench images records it)" >&2; exit 2; }
    "$SLIPWAY" copy -q --plain-http "$LINK_REGISTRY/$REPO:$size" "$LINK_REGISTRY/$REPO-indexed:$size"
    rm -rf "$RUN_DIR/indexer"
    "$SLIPWAY" index -q --plain-http --push --store "$RUN_DIR/indexer" --prioritize "$WORK/record-$size.txt" "$LINK_REGISTRY/$REPO-indexed:$size"
    rm -rf "$RUN_DIR/indexer"
  done
fi

# --- runs -----------------------------------------------------------------------------------------------
RAW=$OUT/$NAME.jsonl
IMAGES=$OUT/$NAME-images.json
: >"$RAW"
echo "{}" >"$IMAGES"
for size in "${size_list[@]}"; do
  for tag in "$size" "$size-esgz" "$size-esgz-opt"; do
    "$SLIPWAY" inspect --json --plain-http "$LINK_REGISTRY/$REPO:$tag" |
      python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); i=json.load(sys.stdin)
d[sys.argv[2]]={"bytes":i["totalSize"],"layers":[{"size":l["size"],"prefetch":(l.get("estargz") or {}).get("prefetchBytes",0)} for l in i["layers"]]}
json.dump(d,open(sys.argv[1],"w"),indent=1)' "$IMAGES" "$tag"
  done
done
for link in "${link_list[@]}"; do
  link_up "$link"
  for size in "${size_list[@]}"; do
    for run in $(seq "$RUNS"); do
      for variant in "${variant_list[@]}"; do
        [[ -n $variant ]] || continue
        IFS=: read -r mode prefetch suffix <<<"${spec[$variant]}"
        follow=()
        ((FOLLOW)) && [[ $prefetch == all && $mode == lazy ]] && follow=(--follow-prefetch)
        host=$LINK_REGISTRY repo=$REPO
        [[ $variant == index ]] && host=$LINK_CACHE
        [[ $variant == index-opt ]] && repo=$REPO-indexed
        profile=()
        [[ $variant == esgz-profile ]] && profile=(--profile "$WORK/record-$size.txt")
        row=$(python3 bench/etl/measure.py --variant "$mode" --prefetch "$prefetch" --ref "$host/$repo:$size$suffix" \
          --slipway "$SLIPWAY" --dir "$RUN_DIR" --plain-http --rx-counter "$(link_rx_counter)" "${follow[@]}" "${profile[@]}" --timeout "$TIMEOUT" \
          --label "net=$link" --label "size=$size" --label "variant=$variant" --label "tag=$size$suffix" --label "run=$run") || true
        [[ -n $row ]] || row="{\"net\":\"$link\",\"size\":\"$size\",\"variant\":\"$variant\",\"run\":\"$run\",\"ok\":false,\"error\":\"measure.py crashed\"}"
        echo "$row" >>"$RAW"
        release_dir "$RUN_DIR"
      done
    done
  done
done

# --- report ---------------------------------------------------------------------------------------------
python3 bench/etl/write_meta.py "$OUT/$NAME-meta.json" "$SLIPWAY" "$INVOCATION" \
  --tools containerd,ctr,ctr-remote,containerd-stargz-grpc "${NOTES[@]/#/--note=}" \
  --note "links: $LINKS (registry in a network namespace behind a veth pair; TBF on its egress)"
python3 bench/etl/report.py "$RAW" "$IMAGES" "$OUT/$NAME" "$OUT/$NAME-meta.json"
python3 bench/etl/html_report.py "$OUT"
