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
