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
