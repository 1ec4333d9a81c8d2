#!/usr/bin/env bash
# Benchmark (issue 4): time to each checkpoint of the 3-stage ETL worker, Slipway lazy mounts against
# Slipway full pull + unpack, cold every run, on loopback and on bandwidth-shaped links.
#
# Variants (images from bench/etl/build-images.sh, built first if the registry lacks them):
#   full          `slipway unpack REPO:SIZE DIR` (plain gzip), then the worker chrooted in DIR
#   esgz-none     `slipway mount --prefetch none REPO:SIZE-esgz`, worker in the mount
#   opt-landmark  `slipway mount --prefetch landmark REPO:SIZE-esgz-opt`
#   esgz-all      `slipway mount REPO:SIZE-esgz` (Slipway's default, --prefetch all)
#   opt-all       `slipway mount REPO:SIZE-esgz-opt` (default --prefetch all)
# Per run: fresh store, sync and drop_caches, then the clock starts (bench/etl/measure.py). Checkpoint times
# come from the worker's own timestamps; bytes at each checkpoint from `slipway status --json` sampled when
# the checkpoint file appears (polled every 20 ms); for full, the bytes `slipway unpack --json` transferred.
#
# Networks: "loopback" = docker-registry on 127.0.0.1; a rate such as "1gbit" or "100mbit" = docker-registry
# in a network namespace behind a veth pair, with a TBF qdisc on its egress (registry -> client) at that rate.
# Both serve the registry storage build-images.sh filled (WORK/registry).
#
# Results: OUT/NAME.md (tables), OUT/NAME.csv (one row per run), OUT/NAME.png (checkpoint times per
# variant; python3-matplotlib from Debian is installed if missing), OUT/NAME.jsonl (the raw rows, with
# every field measure.py records). NAME defaults to lazy-vs-full.
#
#   bench/etl/lazy-vs-full.sh                                   # small,large x loopback,1gbit x 5 variants x 3
#   bench/etl/lazy-vs-full.sh --sizes small --runs 2 --nets loopback,1gbit
#
# Options:
#   --sizes LIST        small, large [small,large]
#   --runs N            cold runs per size, network and variant [3]
#   --nets LIST         loopback and/or TBF rates (tc syntax: 1gbit, 100mbit, ...) [loopback,1gbit]
#   --variants LIST     subset of full,esgz-none,opt-landmark,esgz-all,opt-all [all five]
#   --repo NAME         repository [etl-lazy]
#   --work DIR          where build-images.sh keeps the registry storage; scratch for runs [/var/tmp/slipway-etl]
#   --out DIR           where the .md, .csv and .png go [bench/results]
#   --name NAME         base name of those files [lazy-vs-full]
#   --registry HOST:PORT  use this running registry (holding REPO) instead; loopback semantics, no shaping
#   --slipway BIN       use this binary instead of `swift build -c release --scratch-path .build-etl`
#   --no-follow         do not wait, after CP3, for the background prefetch of --prefetch all to finish
#                       (by default the run also reports when the whole image was local: t_all_local)
#   --timeout S         per run [900]
#   (sizes of the assets: see build-images.sh; pass --build-args "..." to forward options to it)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD
INVOCATION="bench/etl/lazy-vs-full.sh $*"

SIZES=small,large
RUNS=3
NETS=loopback,1gbit
VARIANTS=full,esgz-none,opt-landmark,esgz-all,opt-all
REPO=etl-lazy
WORK=/var/tmp/slipway-etl
OUT=bench/results
NAME=lazy-vs-full
REGISTRY=""
SLIPWAY=${SLIPWAY:-}
FOLLOW=1
TIMEOUT=900
BUILD_ARGS=""
while (($#)); do
  case $1 in
    --sizes) SIZES=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --nets) NETS=$2; shift 2 ;;
    --variants) VARIANTS=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --registry) REGISTRY=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --no-follow) FOLLOW=0; shift ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    --build-args) BUILD_ARGS=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "lazy-vs-full.sh needs root (FUSE, chroot, drop_caches, network namespaces)" >&2; exit 1; }
[[ -e /dev/fuse ]] || { echo "no /dev/fuse" >&2; exit 1; }
source bench/etl/common.sh

ensure_packages docker-registry curl fuse3 iproute2 python3-matplotlib
ensure_slipway

IFS=, read -r -a size_list <<<"$SIZES"
IFS=, read -r -a net_list <<<"$NETS"
IFS=, read -r -a variant_list <<<"$VARIANTS"
if [[ -n $REGISTRY ]]; then
  for net in "${net_list[@]}"; do [[ $net == loopback ]] || { echo "--registry: only --nets loopback" >&2; exit 2; }; done
fi

# --- images: build what is missing (build-images.sh runs its own registry over WORK/registry) -------------
have_tag() { curl -fs -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$1/v2/$REPO/manifests/$2"; }
if [[ -z $REGISTRY ]]; then
  # shellcheck disable=SC2086
  bench/etl/build-images.sh --sizes "$SIZES" --repo "$REPO" --work "$WORK" --slipway "$SLIPWAY" $BUILD_ARGS
else
  for size in "${size_list[@]}"; do
    have_tag "$REGISTRY" "$size-esgz-opt" ||
      bench/etl/build-images.sh --registry "$REGISTRY" --sizes "$size" --repo "$REPO" --work "$WORK" --slipway "$SLIPWAY" $BUILD_ARGS
  done
fi

# --- registries -----------------------------------------------------------------------------------------
NS=slwetl-reg HOST_IF=slwetl-h NS_IF=slwetl-r SUBNET=10.231.77
REGISTRY_PID=""
RUN_DIR=$WORK/run
stop_registry() {
  if [[ -n $REGISTRY_PID ]]; then kill "$REGISTRY_PID" 2>/dev/null || true; wait "$REGISTRY_PID" 2>/dev/null || true; fi
  REGISTRY_PID=""
}
cleanup() {
  mountpoint -q "$RUN_DIR/mnt" 2>/dev/null && "$SLIPWAY" umount --store "$RUN_DIR/store" "$RUN_DIR/mnt" 2>/dev/null || true
  stop_registry
  ip netns del "$NS" 2>/dev/null || true
}
trap cleanup EXIT
start_registry() { # ADDR [netns]
  local addr=$1 cfg=$WORK/registry-bench.yml
  cat >"$cfg" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $addr}
log: {level: error}
YAML
  if [[ ${2:-} ]]; then
    ip netns exec "$2" docker-registry serve "$cfg" >"$WORK/registry-bench.log" 2>&1 &
  else
    docker-registry serve "$cfg" >"$WORK/registry-bench.log" 2>&1 &
  fi
  REGISTRY_PID=$!
  for _ in $(seq 100); do curl -fs "http://$addr/v2/" >/dev/null && return; sleep 0.1; done
  echo "docker-registry did not start on $addr" >&2; cat "$WORK/registry-bench.log" >&2; exit 1
}
setup_netns() {
  ip -4 addr show | grep -q " $SUBNET\." && { echo "$SUBNET.0/24 is in use on this machine; edit SUBNET" >&2; exit 1; }
  ip netns del "$NS" 2>/dev/null || true
  ip netns add "$NS"
  ip link add "$HOST_IF" type veth peer name "$NS_IF"
  ip link set "$NS_IF" netns "$NS"
  ip addr add "$SUBNET.2/24" dev "$HOST_IF"
  ip link set "$HOST_IF" up
  ip -n "$NS" addr add "$SUBNET.1/24" dev "$NS_IF"
  ip -n "$NS" link set "$NS_IF" up
  ip -n "$NS" link set lo up
}
burst_for() { # tc rate -> a TBF burst that GSO super-packets fit in (kernel-facts.md §4)
  python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", sys.argv[1].lower())
if not m: sys.exit(f"rate {sys.argv[1]!r}: use tc syntax such as 1gbit or 100mbit")
bits = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
print(f"{max(32, -(-bits / 8 / 1000 // (32 * 1024)) * 32):.0f}kb")  # 1 ms of traffic in 32 KB steps, >= 32 KB
PY
}

# --- runs -----------------------------------------------------------------------------------------------
mkdir -p "$OUT" "$RUN_DIR"
RAW=$WORK/$NAME.jsonl
IMAGES=$WORK/$NAME-images.json
: >"$RAW"
echo "{}" >"$IMAGES"
declare -A spec=(
  [full]="full:all:"          [esgz-none]="lazy:none:-esgz" [opt-landmark]="lazy:landmark:-esgz-opt"
  [esgz-all]="lazy:all:-esgz" [opt-all]="lazy:all:-esgz-opt")
for v in "${variant_list[@]}"; do [[ -n ${spec[$v]:-} ]] || { echo "unknown variant $v" >&2; exit 2; }; done

for net in "${net_list[@]}"; do
  stop_registry
  PLAIN=()
  if [[ -n $REGISTRY ]]; then
    reg=$REGISTRY
  elif [[ $net == loopback ]]; then
    port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    reg=127.0.0.1:$port
    start_registry "$reg"
  else
    [[ -e /run/netns/$NS ]] || setup_netns
    burst=$(burst_for "$net")
    ip netns exec "$NS" tc qdisc replace dev "$NS_IF" root tbf rate "$net" burst "$burst" latency 50ms
    log "shaped link: $(ip netns exec "$NS" tc qdisc show dev "$NS_IF")"
    reg=$SUBNET.1:5000
    start_registry "$reg" "$NS"
    PLAIN=(--plain-http)
  fi
  log "network $net: registry $reg"
  for size in "${size_list[@]}"; do
    for tag in "$size" "$size-esgz" "$size-esgz-opt"; do
      "$SLIPWAY" inspect --json "${PLAIN[@]}" "$reg/$REPO:$tag" |
        python3 -c 'import json,sys; d=json.load(open(sys.argv[1])); i=json.load(sys.stdin)
d[sys.argv[2]]={"bytes":i["totalSize"],"layers":[{"size":l["size"],"prefetch":(l.get("estargz") or {}).get("prefetchBytes",0)} for l in i["layers"]]}
json.dump(d,open(sys.argv[1],"w"),indent=1)' "$IMAGES" "$tag"
    done
    for run in $(seq "$RUNS"); do
      for variant in "${variant_list[@]}"; do
        IFS=: read -r mode prefetch suffix <<<"${spec[$variant]}"
        follow=()
        ((FOLLOW)) && [[ $prefetch == all && $mode == lazy ]] && follow=(--follow-prefetch)
        row=$(python3 bench/etl/measure.py --variant "$mode" --prefetch "$prefetch" --ref "$reg/$REPO:$size$suffix" \
          --slipway "$SLIPWAY" --dir "$RUN_DIR" "${PLAIN[@]}" "${follow[@]}" --timeout "$TIMEOUT" \
          --label "net=$net" --label "size=$size" --label "variant=$variant" --label "tag=$size$suffix" --label "run=$run") || true
        [[ -n $row ]] || row="{\"net\":\"$net\",\"size\":\"$size\",\"variant\":\"$variant\",\"run\":\"$run\",\"ok\":false,\"error\":\"measure.py crashed\"}"
        echo "$row" >>"$RAW"
      done
    done
  done
done
stop_registry
ip netns del "$NS" 2>/dev/null || true

# --- report ---------------------------------------------------------------------------------------------
meta=$(python3 - "$SLIPWAY" "$INVOCATION" <<'PY'
import json, os, platform, subprocess, sys
def run(*c):
    try: return subprocess.run(c, capture_output=True, text=True).stdout.strip()
    except OSError: return ""
tools = {t: bool(run("sh", "-c", f"command -v {t}")) for t in ("containerd", "ctr", "ctr-remote", "containerd-stargz-grpc")}
print(json.dumps({
    "invocation": sys.argv[2], "cores": os.cpu_count(), "kernel": platform.release(),
    "mem_gib": round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30),
    "commit": run("git", "rev-parse", "--short", "HEAD"), "dirty": bool(run("git", "status", "--porcelain", "--", "Sources")),
    "slipway": run(sys.argv[1], "--version"), "date": run("date", "-u", "+%Y-%m-%d %H:%M UTC"), "peer_tools": tools}))
PY
)
/usr/bin/python3 bench/etl/report.py "$RAW" "$IMAGES" "$OUT/$NAME" "$meta"
cp "$RAW" "$OUT/$NAME.jsonl"
log "wrote $OUT/$NAME.md, .csv, .png, .jsonl"
