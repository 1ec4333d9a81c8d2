# Shared by the ETL benchmark scripts: logging, Debian packages, the slipway binary. Source it after `cd`ing to
# the repository root and setting REPO_ROOT and SLIPWAY (empty to build one).

log() { printf '[%s] %s\n' "$(date +%H:%M:%S)" "$*" >&2; }

# Installs whichever of the given Debian packages are missing.
ensure_packages() {
  local missing=() pkg
  for pkg in "$@"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
  done
  if ((${#missing[@]})); then
    log "installing ${missing[*]}"
    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
}

# Builds slipway (release, in .build-etl) unless SLIPWAY names a binary already.
ensure_slipway() {
  if [[ -z $SLIPWAY ]]; then
    log "building slipway (release, .build-etl)"
    swift build -c release --product slipway --scratch-path .build-etl >/dev/null
    SLIPWAY=$REPO_ROOT/.build-etl/release/slipway
  fi
}

# Serves the ETL images (WORK/registry, filled by build-images.sh) with docker-registry on 127.0.0.1:PORT,
# configured and logged in SCRATCH; sets REGISTRY_PID (the caller stops it).
serve_etl_registry() {  # WORK PORT SCRATCH
  local work=$1 port=$2 scratch=$3
  [[ -d $work/registry/docker ]] || { echo "no benchmark registry under $work/registry: run bench/etl/build-images.sh --sizes small first" >&2; exit 2; }
  cat >"$scratch/registry.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: 127.0.0.1:$port}
log: {level: error}
YAML
  docker-registry serve "$scratch/registry.yml" >"$scratch/registry.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 50); do curl -fs "http://127.0.0.1:$port/v2/" >/dev/null && return; sleep 0.1; done
  echo "docker-registry did not start on 127.0.0.1:$port (see $scratch/registry.log)" >&2
  exit 1
}

# The compressed size of an image (its layers), for the reports' "÷ image" columns.
image_size() { # REF (plain HTTP)
  "$SLIPWAY" inspect --json --plain-http "$1" | python3 -c 'import json,sys; print(json.load(sys.stdin)["totalSize"])'
}

# The ETL worker's input: DIR/data/shard-0..N-1.csv of ROWS orders each, from a fixed seed (kept if present).
write_etl_data() { # DIR SHARDS ROWS SEED
  [[ -s $1/data/shard-$(($2 - 1)).csv ]] && return
  mkdir -p "$1/data"
  python3 - "$1/data" "$2" "$3" "$4" <<'PY'
import random, sys
directory, shards, rows, seed = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
r = random.Random(seed)
for shard in range(shards):
    with open(f"{directory}/shard-{shard}.csv", "w") as f:
        f.write("order_id,region,product,quantity,amount\n")
        for i in range(rows):
            f.write(f"{shard * rows + i},R{r.randrange(24):02d},P{r.randrange(400):03d},{r.randint(1, 9)},{r.uniform(1, 500):.2f}\n")
PY
}

# --- the registry link: a network namespace behind a veth pair, shaped with TBF -----------------------------
# The registry runs in namespace LINK_NS at $LINK_SUBNET.1; this host reaches it over the veth LINK_HOST_IF,
# whose rx counter is every byte the node received from the registry, whatever the client.
LINK_NS=slwbench-reg LINK_HOST_IF=slwbench-h LINK_NS_IF=slwbench-r LINK_SUBNET=10.231.77
LINK_REGISTRY=$LINK_SUBNET.1:5000

link_burst_for() { # tc rate -> a TBF burst that GSO super-packets fit in (kernel-facts.md §4)
  python3 - "$1" <<'PY'
import re, sys
m = re.fullmatch(r"(\d+(?:\.\d+)?)([kmg]?)bit", sys.argv[1].lower())
if not m: sys.exit(f"link rate {sys.argv[1]!r}: use none or tc syntax such as 1gbit or 100mbit")
bits = float(m[1]) * {"": 1, "k": 1e3, "m": 1e6, "g": 1e9}[m[2]]
print(f"{max(32, -(-bits / 8 / 1000 // (32 * 1024)) * 32):.0f}kb")  # 1 ms of traffic in 32 KB steps, >= 32 KB
PY
}

# Creates the namespace and veth pair (once), and shapes the registry's egress to RATE ("none": unshaped).
link_up() { # RATE
  if [[ ! -e /run/netns/$LINK_NS ]]; then
    ip -4 addr show | grep -q " $LINK_SUBNET\." && { echo "$LINK_SUBNET.0/24 is in use on this machine" >&2; exit 1; }
    ip netns add "$LINK_NS"
    ip link add "$LINK_HOST_IF" type veth peer name "$LINK_NS_IF"
    ip link set "$LINK_NS_IF" netns "$LINK_NS"
    ip addr add "$LINK_SUBNET.2/24" dev "$LINK_HOST_IF"
    ip link set "$LINK_HOST_IF" up
    ip -n "$LINK_NS" addr add "$LINK_SUBNET.1/24" dev "$LINK_NS_IF"
    ip -n "$LINK_NS" link set "$LINK_NS_IF" up
    ip -n "$LINK_NS" link set lo up
  fi
  if [[ $1 == none ]]; then
    ip netns exec "$LINK_NS" tc qdisc del dev "$LINK_NS_IF" root 2>/dev/null || true
    log "link: veth, unshaped"
  else
    local burst
    burst=$(link_burst_for "$1")
    ip netns exec "$LINK_NS" tc qdisc replace dev "$LINK_NS_IF" root tbf rate "$1" burst "$burst" latency 50ms
    log "link: $(ip netns exec "$LINK_NS" tc qdisc show dev "$LINK_NS_IF")"
  fi
}
link_down() { ip netns del "$LINK_NS" 2>/dev/null || true; }  # takes the veth pair and its qdisc with it
link_rx_counter() { echo "/sys/class/net/$LINK_HOST_IF/statistics/rx_bytes"; }

# Serves WORK/registry with docker-registry inside the link's namespace; sets REGISTRY_PID.
start_link_registry() { # WORK SCRATCH
  local work=$1 scratch=$2
  [[ -d $work/registry/docker ]] || { echo "no benchmark registry under $work/registry: run \`slipway bench images\` first" >&2; exit 2; }
  cat >"$scratch/registry-link.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $work/registry}}
http: {addr: $LINK_REGISTRY}
log: {level: error}
YAML
  ip netns exec "$LINK_NS" docker-registry serve "$scratch/registry-link.yml" >"$scratch/registry-link.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 100); do curl -fs "http://$LINK_REGISTRY/v2/" >/dev/null && return; sleep 0.1; done
  echo "docker-registry did not start on $LINK_REGISTRY (see $scratch/registry-link.log)" >&2
  exit 1
}

# The cluster's cache: `slipway serve --index` beside the registry, inside the link's namespace (so the node
# reaches it over the same shaped link), with the registry as its upstream; sets CACHE_PID. Then WARM_REFS are
# pulled through it by "another node" (unshaped, before the runs), so the cache holds their blobs and has
# indexed their plain gzip layers, as in a cluster where one node pulled the image before.
LINK_CACHE=$LINK_SUBNET.1:5001
start_link_cache() { # SCRATCH WARM_REF...
  local scratch=$1 ref
  shift
  rm -rf "$scratch/cache-store"
  ip netns exec "$LINK_NS" "$SLIPWAY" serve --index --upstream "http://$LINK_REGISTRY" --listen "$LINK_CACHE" \
    --root "$scratch/cache-store" >"$scratch/cache-link.log" 2>&1 &
  CACHE_PID=$!
  for _ in $(seq 100); do curl -fs "http://$LINK_CACHE/v2/" >/dev/null && break; sleep 0.1; done
  curl -fs "http://$LINK_CACHE/v2/" >/dev/null || { echo "slipway serve did not start on $LINK_CACHE (see $scratch/cache-link.log)" >&2; exit 1; }
  for ref in "$@"; do
    rm -rf "$scratch/other-node"
    "$SLIPWAY" pull -q --plain-http --store "$scratch/other-node" "$ref"
  done
  rm -rf "$scratch/other-node"
  for _ in $(seq 600); do
    [[ $(curl -fs "http://$LINK_CACHE/metrics" | awk '$1 == "slipway_cache_gzip_index_builds_in_flight" {print $2}') == 0 ]] && break
    sleep 0.2
  done
  log "cache: $(curl -fs "http://$LINK_CACHE/metrics" | awk '$1 ~ /gzip_index/ {printf "%s=%s ", $1, $2}')"
}

# Unmounts everything mounted under DIR (deepest first): what an interrupted benchmark may leave (lazy mounts,
# overlays, loop-mounted SIFs, containerd's snapshots). The harnesses kill their daemons themselves.
release_dir() { # DIR
  local dir target
  dir=$(realpath -m "$1")
  findmnt -rn -o TARGET | awk -v d="$dir/" 'index($0 "/", d) == 1' | sort -r | while read -r target; do
    umount "$target" 2>/dev/null || umount -l "$target" 2>/dev/null || true
  done
}

# Fails with one message naming every missing command and the Debian package that has it.
require_commands() { # CMD:PACKAGE ...
  local missing=() pair
  for pair in "$@"; do command -v "${pair%%:*}" >/dev/null || missing+=("${pair%%:*} (apt-get install ${pair#*:})"); done
  ((${#missing[@]} == 0)) || { echo "missing: ${missing[*]}" >&2; exit 1; }
}

# Whatever way a benchmark ends (done, failed, Ctrl-C, TERM, HUP): stop its registry (REGISTRY_PID), its
# containerds and their shims, unmount what is left under RUN_DIR, and delete the link's namespace. A shell
# runs its EXIT trap on a signal only if the signal is trapped too.
clean_up_on_exit() {
  REGISTRY_PID="" CACHE_PID=""
  trap clean_up EXIT
  trap 'exit 130' INT
  trap 'exit 143' TERM
  trap 'exit 129' HUP
}
clean_up() {
  [[ -n $REGISTRY_PID ]] && { kill "$REGISTRY_PID" 2>/dev/null; wait "$REGISTRY_PID" 2>/dev/null; } || true
  [[ -n ${CACHE_PID:-} ]] && { kill "$CACHE_PID" 2>/dev/null; wait "$CACHE_PID" 2>/dev/null; } || true
  pkill -f "containerd --config $RUN_DIR/" 2>/dev/null || true
  pkill -f "containerd-shim.*$RUN_DIR/" 2>/dev/null || true
  pkill -f "snapshotter --address $RUN_DIR/" 2>/dev/null || true
  release_dir "$RUN_DIR"
  link_down
}
