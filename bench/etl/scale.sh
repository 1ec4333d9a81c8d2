#!/usr/bin/env bash
# Benchmark "scale" (`slipway bench scale`): the Patch Tuesday job launched on 1, 2, 4, 8, 16 nodes at once of
# a local Slurm cluster (scripts/cluster), by each distribution strategy, cold and warm.
#
# Strategies (one `slipway run` per node, one task per node; bench/etl/scale-job.sh):
#   direct   each node pulls from the registry host itself, into its own store (its local disk)
#   cache    each node pulls through the cluster's `slipway serve` cache (10.78.0.1:5050), into its own store
#   shared   every node pulls through the cache into one store on the shared directory (for NFS): the
#            store's leases let one node fetch and extract each layer while the others wait for it (the
#            set-up of examples/slurm/etl.sbatch)
#   lazy     every node mounts the eStargz image lazily through the cache, with one store (and chunk cache) on
#            the shared directory
#   plugin   as shared, but the tasks run through Slipway's SPANK plugin (`srun --container-image`, which
#            prepares the image once per node and step) instead of `slipway run` in srun
# Caches: cold = v1 onto empty stores and an empty cache server, page cache dropped; warm = v2 right after,
# keeping what v1's launch left (a patch release onto a cluster that ran the last one).
# The registry host's link (TBF on its egress, the one link every node's upstream traffic crosses) has the
# --link rate; node links and the shared directory are unshaped. All nodes share this machine's cores.
#
# Results: OUT/scale.jsonl (one row per launch, with every task's times; failed launches are rows with
# ok=false), scale.csv, scale-meta.json, and OUT/report.html (with the other benchmarks' results in OUT).
#
#   bench/etl/scale.sh                         # nodes 1,2,4,8,16 x 4 strategies x cold+warm, link 1gbit
#   bench/etl/scale.sh --quick                 # nodes 1,2; link none
#
# Options:
#   --nodes LIST       node counts [1,2,4,8,16]; the cluster has the largest
#   --strategies LIST  subset of direct,cache,shared,lazy,plugin [all]
#   --link RATE        TBF rate of the registry host's link (tc syntax), or none [1gbit]
#   --runs N           repetitions [1]
#   --quick            --nodes 1,2 --link none
#   --repo NAME        repository of the images [etl]
#   --work DIR         where `slipway bench images` keeps the registry storage [/var/tmp/slipway-etl]
#   --scratch DIR      the cluster, the stores and the cache server's store [WORK/scale]
#   --out DIR          results [bench/results]
#   --slipway BIN      this binary instead of building one
#   --timeout S        per launch [900]
# A cluster must not be up already (scripts/cluster down first); this one lives in SCRATCH/cluster and is
# taken down at the end, on failure and on Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD
INVOCATION="scale $*"

NODE_COUNTS=1,2,4,8,16
STRATEGIES=direct,cache,shared,lazy,plugin
LINK=1gbit
RUNS=1
REPO=etl
WORK=/var/tmp/slipway-etl
OUT=bench/results
SCRATCH=""
SLIPWAY=${SLIPWAY:-}
TIMEOUT=900
while (($#)); do
  case $1 in
    --nodes) NODE_COUNTS=$2; shift 2 ;;
    --strategies) STRATEGIES=$2; shift 2 ;;
    --link) LINK=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --quick) NODE_COUNTS=1,2 LINK=none; shift ;;
    --repo) REPO=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --scratch) SCRATCH=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --timeout) TIMEOUT=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "the scale benchmark needs root (a Slurm cluster in network namespaces, tc, mounts)" >&2; exit 1; }
source bench/etl/common.sh
IFS=, read -r -a node_list <<<"$NODE_COUNTS"
IFS=, read -r -a strategy_list <<<"$STRATEGIES"
max_nodes=0
for n in "${node_list[@]}"; do
  [[ $n =~ ^[0-9]+$ ]] && ((n >= 1 && n <= 64)) || { echo "--nodes: $n is not a node count (1..64)" >&2; exit 2; }
  ((n > max_nodes)) && max_nodes=$n
done
for s in "${strategy_list[@]}"; do
  [[ $s =~ ^(direct|cache|shared|lazy|plugin)$ ]] || { echo "unknown strategy $s (direct, cache, shared, lazy, plugin)" >&2; exit 2; }
done
[[ $LINK == none ]] || link_burst_for "$LINK" >/dev/null || exit 2
[[ $RUNS =~ ^[1-9][0-9]*$ ]] || { echo "--runs: $RUNS is not a positive number" >&2; exit 2; }

ensure_packages docker-registry curl iproute2 fuse3 runc slurm-wlm munge
require_commands docker-registry:docker-registry tc:iproute2 runc:runc sbatch:slurm-client slurmd:slurmd munged:munge
[[ -e /dev/fuse ]] || { echo "no /dev/fuse (the lazy strategy needs FUSE)" >&2; exit 1; }
ensure_slipway

RUN_DIR=$(realpath -m -- "${SCRATCH:-$WORK/scale}")
CLUSTER_DIR=$RUN_DIR/cluster
REGISTRY=10.78.1.1:5000 CACHE=10.78.0.1:5050
REGISTRY_PID="" CACHE_PID="" CLUSTER_UP=0
scale_clean_up() {
  stop_cache
  [[ -n $REGISTRY_PID ]] && { kill "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null; } || true
  ((CLUSTER_UP)) && scripts/cluster down --dir "$CLUSTER_DIR" || true
  release_dir "$RUN_DIR"
}
stop_cache() {
  [[ -n $CACHE_PID ]] && { kill "$CACHE_PID" 2>/dev/null; wait "$CACHE_PID" 2>/dev/null; } || true
  CACHE_PID=""
}
trap scale_clean_up EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
trap 'exit 129' HUP

# The cluster's pull-through cache, on an empty store: a cold cache.
start_cold_cache() {
  stop_cache
  rm -rf "$RUN_DIR/cache"
  "$SLIPWAY" serve --upstream "http://$REGISTRY" --listen "$CACHE" --root "$RUN_DIR/cache" --access-log none \
    >>"$RUN_DIR/cache.log" 2>&1 &
  CACHE_PID=$!
  for _ in $(seq 100); do curl -fs "http://$CACHE/v2/" >/dev/null && return; sleep 0.1; done
  echo "slipway serve did not start on $CACHE (see $RUN_DIR/cache.log)" >&2
  exit 1
}

# --- images, cluster, registry, data ------------------------------------------------------------------------
# Builds what is missing or was built from other workers; quick when the images are current.
bench/etl/build-images.sh --sizes "" --versions 2 --patch-repo "$REPO" --work "$WORK" --slipway "$SLIPWAY"
mkdir -p "$RUN_DIR" "$OUT"
: >"$RUN_DIR/cache.log"
log "cluster: $max_nodes nodes, registry link $LINK"
scripts/cluster up --nodes "$max_nodes" --link "$LINK" --dir "$CLUSTER_DIR" --slipway "$SLIPWAY" >/dev/null
CLUSTER_UP=1
eval "$(scripts/cluster env --dir "$CLUSTER_DIR")"
cat >"$RUN_DIR/registry.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REGISTRY}
log: {level: error}
YAML
ip netns exec slwcl-reg docker-registry serve "$RUN_DIR/registry.yml" >"$RUN_DIR/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 100); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done
curl -fs "http://$REGISTRY/v2/" >/dev/null || { echo "docker-registry did not start on $REGISTRY" >&2; exit 1; }
image_bytes=$(image_size "$REGISTRY/$REPO:v1")
log "$REPO:v1 is $image_bytes bytes compressed"

DATA=$SLIPWAY_CLUSTER_SHARED/etl
write_etl_data "$DATA" 2 20000 20261203

# --- launches -----------------------------------------------------------------------------------------------
RAW=$OUT/scale.jsonl
: >"$RAW"
launch() { # STRATEGY NODES CACHE VERSION RUN
  local strategy=$1 n=$2 cache=$3 version=$4 run=$5 args=() row
  case $strategy in
    direct) args=(--image "$REGISTRY/$REPO:v$version" --mode unpacked --store "$RUN_DIR/stores/direct" --node-local) ;;
    cache) args=(--image "$CACHE/$REPO:v$version" --mode unpacked --store "$RUN_DIR/stores/cache" --node-local
                 --cache-metrics "http://$CACHE/metrics") ;;
    shared) args=(--image "$CACHE/$REPO:v$version" --mode unpacked --store "$SLIPWAY_CLUSTER_SHARED/store"
                  --cache-metrics "http://$CACHE/metrics") ;;
    lazy) args=(--image "$CACHE/$REPO:v$version-esgz" --mode lazy --store "$SLIPWAY_CLUSTER_SHARED/store"
                --cache-metrics "http://$CACHE/metrics") ;;
    plugin) args=(--image "$CACHE/$REPO:v$version" --mode unpacked --store "$SLIPWAY_CLUSTER_SHARED/store" --plugin
                  --cache-metrics "http://$CACHE/metrics") ;;
  esac
  row=$(python3 bench/etl/scale_launch.py --nodes "$n" --strategy "$strategy" --cache "$cache" --version "$version" \
    --data "$DATA" --slipway "$SLIPWAY" --timeout "$TIMEOUT" "${args[@]}" \
    --label "link=$LINK" --label "run=$run" --label "image_bytes=$image_bytes") || true
  [[ -n $row ]] || row="{\"bench\":\"scale\",\"link\":\"$LINK\",\"strategy\":\"$strategy\",\"nodes\":$n,\"cache\":\"$cache\",\"run\":$run,\"ok\":false,\"error\":\"scale_launch.py crashed\"}"
  echo "$row" >>"$RAW"
}
for run in $(seq "$RUNS"); do
  for n in "${node_list[@]}"; do
    for strategy in "${strategy_list[@]}"; do
      release_dir "$RUN_DIR/stores"
      release_dir "$SLIPWAY_CLUSTER_SHARED/store"
      rm -rf "$RUN_DIR/stores" "$SLIPWAY_CLUSTER_SHARED/store"
      start_cold_cache
      launch "$strategy" "$n" cold 1 "$run"
      launch "$strategy" "$n" warm 2 "$run"
    done
  done
done

# --- results ------------------------------------------------------------------------------------------------
python3 bench/etl/rows_to_csv.py "$RAW" "$OUT/scale.csv" \
  link,strategy,cache,nodes,run,ok,t_job_start,t_first_start,t_last_start,t_first_result,t_median_result,t_last_result,t_job_end,upstream_bytes,cache_upstream_bytes,node_link_bytes,image_bytes,cpu_busy,io_wait,load1,error
python3 bench/etl/write_meta.py "$OUT/scale-meta.json" "$SLIPWAY" "$INVOCATION" \
  --tools slurmctld,slurmd,munged,docker-registry,runc \
  --note "a local Slurm 22.05 cluster of $max_nodes nodes (scripts/cluster): each node a network and UTS namespace of this machine, so all nodes share its $(nproc) cores and disk" \
  --note "registry host link: $LINK (TBF on its egress); node links (veths on a bridge) and the shared directory (for NFS) unshaped" \
  --note "cold: v1 onto empty stores and an empty cache server, page cache dropped; warm: v2 right after v1 on the same stores" \
  --note "times are seconds from sbatch; a task's result is its worker's result file (2 shards of 20,000 rows)"
python3 bench/etl/html_report.py "$OUT"
