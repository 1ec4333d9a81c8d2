#!/usr/bin/env bash
# Container start for an image already on the node, containerd's overlayfs snapshotter against Slipway's
# (bench/etl/container-start.py has the method). Serves the Patch Tuesday images bench/etl/build-images.sh left
# in WORK/registry on loopback.
#
#   bench/etl/container-start.sh [--runs 20] [--slipway BIN] [--work /var/tmp/slipway-etl] [--out bench/results]
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD
RUNS=20 WORK=/var/tmp/slipway-etl OUT=bench/results SLIPWAY=${SLIPWAY:-}
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "the container-start benchmark needs root (containerd, FUSE)" >&2; exit 1; }
source bench/etl/common.sh
ensure_packages docker-registry curl fuse3 containerd stargz-snapshotter
require_commands docker-registry:docker-registry containerd:containerd ctr:containerd ctr-remote:stargz-snapshotter
ensure_slipway
RUN_DIR=$(mktemp -d /var/tmp/slipway-start.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REGISTRY_PID=""
stop_all() {  # the registry, containerds, their shims, snapshotters and mounts under RUN_DIR (not the link namespace)
  [[ -n $REGISTRY_PID ]] && kill "$REGISTRY_PID" 2>/dev/null
  pkill -f "containerd --config $RUN_DIR/" 2>/dev/null
  pkill -f "containerd-shim.*$RUN_DIR/" 2>/dev/null
  pkill -f "snapshotter --address $RUN_DIR/" 2>/dev/null
  release_dir "$RUN_DIR"
  rm -rf "$RUN_DIR"
}
trap stop_all EXIT
trap 'exit 130' INT
trap 'exit 143' TERM
serve_etl_registry "$WORK" "$PORT" "$RUN_DIR"
mkdir -p "$OUT"
python3 bench/etl/container-start.py --registry "127.0.0.1:$PORT" --runs "$RUNS" --slipway "$SLIPWAY" --dir "$RUN_DIR" --out "$OUT/container-start"
