#!/usr/bin/env bash
# How long `slipway mount` (default --prefetch all) takes to have a whole image local, with no workload, against
# `slipway pull` of the same image, cold each time, on loopback. A reproduction for the prefetch throughput
# seen in bench/etl/lazy-vs-full.sh ("all local" later than the full pull).
#
#   bench/etl/prefetch-vs-pull.sh [--tag large] [--runs 2] [--slipway BIN] [--work /var/tmp/slipway-etl]
#
# Serves the registry storage bench/etl/build-images.sh filled (WORK/registry; run that first). Prints, per
# run, the pull time, the time until `slipway status` reports the prefetch finished, and the CPU seconds the
# mount process used by then.
set -euo pipefail
cd "$(dirname "$0")/../.."
TAG=large RUNS=2 WORK=/var/tmp/slipway-etl SLIPWAY=${SLIPWAY:-} REPO=etl-lazy
while (($#)); do
  case $1 in
    --tag) TAG=$2; shift 2 ;;
    --runs) RUNS=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done
if [[ -z $SLIPWAY ]]; then
  swift build -c release --product slipway --scratch-path .build-etl >/dev/null
  SLIPWAY=$PWD/.build-etl/release/slipway
fi
[[ -d $WORK/registry ]] || { echo "no $WORK/registry: run bench/etl/build-images.sh first" >&2; exit 1; }
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
REG=127.0.0.1:$PORT
T=$(mktemp -d /var/tmp/slipway-prefetch.XXXXXX)
cat >"$T/registry.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: $REG}
log: {level: error}
YAML
docker-registry serve "$T/registry.yml" >"$T/registry.log" 2>&1 &
RP=$!
trap 'mountpoint -q "$T/mnt" && "$SLIPWAY" umount --store "$T/s" "$T/mnt"; kill $RP 2>/dev/null; rm -rf "$T"' EXIT
for _ in $(seq 50); do curl -fs "http://$REG/v2/" >/dev/null && break; sleep 0.1; done
mkdir -p "$T/mnt"
cold() { rm -rf "$T/s"; sync; echo 3 >/proc/sys/vm/drop_caches; }
since() { python3 -c "import sys, time; print(f'{time.time() - float(sys.argv[1]):.2f}')" "$1"; }
for run in $(seq "$RUNS"); do
  cold
  t=$(date +%s.%N)
  "$SLIPWAY" pull -q --store "$T/s" "$REG/$REPO:$TAG" >/dev/null
  echo "run $run: slipway pull $REPO:$TAG: $(since "$t") s"
  cold
  t=$(date +%s.%N)
  "$SLIPWAY" mount -q --store "$T/s" "$REG/$REPO:$TAG-esgz" "$T/mnt" >/dev/null
  pid=$(python3 -c 'import glob, json, sys; print(json.load(open(glob.glob(sys.argv[1] + "/mounts/*.json")[0]))["pid"])' "$T/s")
  until "$SLIPWAY" status --json --store "$T/s" "$T/mnt" |
    python3 -c 'import json, sys; sys.exit(0 if json.load(sys.stdin)["statistics"]["prefetchFinished"] else 1)'; do sleep 0.1; done
  elapsed=$(since "$t")
  cpu=$(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f", ($14 + $15) / hz}' "/proc/$pid/stat")
  stats=$("$SLIPWAY" umount --json --store "$T/s" "$T/mnt" |
    python3 -c 'import json, sys; s = json.load(sys.stdin)["statistics"]; print("%d requests, %.1f MiB" % (s["requests"], s["bytesFetched"] / 2**20))')
  echo "run $run: slipway mount $REPO:$TAG-esgz, whole image local: $elapsed s (mount process CPU $cpu s; $stats)"
done
