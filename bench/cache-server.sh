#!/usr/bin/env bash
# Benchmark: the pull-through cache `slipway serve` against docker-registry (distribution 2.8, Debian package
# docker-registry) in proxy mode, side by side in one run, both in front of the same upstream docker-registry
# (filesystem storage, plain HTTP, all on 127.0.0.1).
#
# Test content (generated once, kept in /var/tmp/slipway-bench-cache): two OCI layouts, each one
# uncompressed tar layer (application/vnd.oci.image.layer.v1.tar) holding one random (incompressible) file:
# bench/big:1 (1 GiB; --quick 256 MiB) and bench/small:1 (4 MiB). Pushed with skopeo --preserve-digests.
#
# Scenarios (servers: slipway, distribution, and where it makes sense "direct" = the upstream itself):
#   concurrent   N (32) parallel `curl -f URL | openssl dgst -sha256` of the big layer from a freshly started
#                cache with an empty root: wall time until all finished, clients whose sha256 matches,
#                upstream bytes / blob size
#   cold pull    `skopeo copy docker://127.0.0.1:P/bench/big:1 oci:OUT:1` from a freshly started, empty cache
#   warm pull    the same again from the now warm cache
#   direct pull  the same straight from the upstream
#                (REPS repetitions each, interleaved; page cache dropped and fresh OUT before every pull)
#   throughput   `wrk -t2 -c16 -d60s` (--quick 10 s) on the small layer's blob URL, warmed through the cache once
# Upstream bytes = the sum of http.response.written over the upstream's GET /v2/.../blobs/ and /manifests/
# log lines written during the scenario (the same independent measurement for both caches); slipway's own
# slipway_cache_upstream_bytes_total from /metrics is recorded alongside as a cross-check.
# Results: $OUT/cache-server.md and $OUT/cache-server.csv (scenario,server,metric,value).
#
#   bench/cache-server.sh            # 1 GiB blob, 3 repetitions, 60 s wrk
#   bench/cache-server.sh --quick    # 256 MiB blob, 10 s wrk
#
# Options (environment variable in brackets):
#   --quick           BIG_MIB=256 WRK_SECONDS=10 (unless given explicitly)
#   --big-mib N       size of the big random layer in MiB [BIG_MIB=1024]
#   --small-mib N     size of the small layer used for wrk in MiB [SMALL_MIB=4]
#   --clients N       parallel clients in the concurrent scenario [CLIENTS=32]
#   --reps N          repetitions of cold, warm and direct pulls [REPS=3]
#   --wrk-seconds N   duration of each wrk run [WRK_SECONDS=60]
#   --slipway BIN     slipway binary with `serve` [SLIPWAY=.build/release/slipway]
#   --out DIR         where the .md and .csv go [OUT=bench/results]
#   --workdir DIR     parent of the scratch directory [WORKDIR=/var/tmp]
#   --keep            keep the scratch directory (servers are stopped anyway)
# Extra arguments for `slipway serve` can be given in SLIPWAY_SERVE_ARGS (e.g. "--max-size 10G").
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
INVOCATION="bench/cache-server.sh $*"

QUICK=0
while (($#)); do
  case $1 in
    --quick) QUICK=1; shift ;;
    --big-mib) BIG_MIB=$2; shift 2 ;;
    --small-mib) SMALL_MIB=$2; shift 2 ;;
    --clients) CLIENTS=$2; shift 2 ;;
    --reps) REPS=$2; shift 2 ;;
    --wrk-seconds) WRK_SECONDS=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
if [ "$QUICK" = 1 ]; then BIG_MIB=${BIG_MIB:-256}; WRK_SECONDS=${WRK_SECONDS:-10}; fi
BIG_MIB=${BIG_MIB:-1024}
SMALL_MIB=${SMALL_MIB:-4}
CLIENTS=${CLIENTS:-32}
REPS=${REPS:-3}
WRK_SECONDS=${WRK_SECONDS:-60}
SLIPWAY=${SLIPWAY:-$REPO/.build/release/slipway}
OUT=${OUT:-bench/results}
WORKDIR=${WORKDIR:-/var/tmp}
KEEP=${KEEP:-0}
SLIPWAY_SERVE_ARGS=${SLIPWAY_SERVE_ARGS:-}
GEN_CACHE=/var/tmp/slipway-bench-cache

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
die() { log "ERROR: $*"; exit 1; }
now() { date +%s.%N; }

# --- tools -------------------------------------------------------------------------------------------------
missing=()
for pkg in docker-registry skopeo wrk curl openssl; do
  dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
  log "installing ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
for tool in python3 docker-registry skopeo wrk curl openssl ss; do command -v $tool >/dev/null || die "needs $tool"; done
[ -x "$SLIPWAY" ] || die "no slipway binary at $SLIPWAY (build it, or give --slipway / SLIPWAY)"
SLIPWAY=$(readlink -f "$SLIPWAY")
"$SLIPWAY" serve --help 2>&1 | grep -q -- --upstream || die "$SLIPWAY has no 'serve' subcommand (serve --help shows no --upstream)"

# --- scratch, servers and cleanup --------------------------------------------------------------------------
WORK=$(mktemp -d "$WORKDIR/slipway-cache-bench.XXXXXX")
declare -A PID=()   # server name -> pid
CLIENT_PIDS=()
cleanup() {
  local rc=$? name p
  trap - EXIT INT TERM
  for p in "${CLIENT_PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  for name in "${!PID[@]}"; do stop_server "$name"; done
  if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi
  exit $rc
}
trap cleanup EXIT
trap 'log "interrupted"; exit 130' INT
trap 'log "terminated"; exit 143' TERM

if [ -w /proc/sys/vm/drop_caches ]; then
  COLD_NOTE="page, dentry and inode caches dropped before every timed pull (sync; echo 3 > /proc/sys/vm/drop_caches)"
  drop_caches() { sync; echo 3 >/proc/sys/vm/drop_caches; }
else
  COLD_NOTE="caches NOT dropped (not root): pulls read warm data"
  drop_caches() { sync; }
fi

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
UP_PORT=$(free_port)
SW_PORT=$(free_port)
DI_PORT=$(free_port)
while [ "$SW_PORT" = "$UP_PORT" ]; do SW_PORT=$(free_port); done
while [ "$DI_PORT" = "$UP_PORT" ] || [ "$DI_PORT" = "$SW_PORT" ]; do DI_PORT=$(free_port); done
declare -A PORT=([upstream]=$UP_PORT [slipway]=$SW_PORT [distribution]=$DI_PORT [direct]=$UP_PORT)
UP_LOG=$WORK/upstream.log

registry_config() { # file root port [proxy-url]
  {
    printf 'version: 0.1\nstorage:\n  filesystem:\n    rootdirectory: %s\n' "$2"
    printf 'http:\n  addr: 127.0.0.1:%s\n' "$3"
    if [ -n "${4:-}" ]; then
      # The caches keep the registry's default logging (info, no combined access log).
      printf 'log:\n  level: info\n  accesslog:\n    disabled: true\nproxy:\n  remoteurl: %s\n' "$4"
    else
      printf 'log:\n  level: info\n  accesslog:\n    disabled: false\n'
    fi
  } >"$1"
}

start_server() { # name
  local name=$1 root=$WORK/root-$1 logf=$WORK/$1.log
  case $name in
    upstream)
      mkdir -p "$root"
      registry_config "$WORK/upstream.yml" "$root" "$UP_PORT"
      docker-registry serve "$WORK/upstream.yml" >>"$logf" 2>&1 &
      ;;
    slipway)
      rm -rf "$root"
      # shellcheck disable=SC2086
      "$SLIPWAY" serve --upstream "http://127.0.0.1:$UP_PORT" --listen "127.0.0.1:$SW_PORT" --root "$root" \
        $SLIPWAY_SERVE_ARGS >>"$logf" 2>&1 &
      ;;
    distribution)
      rm -rf "$root" && mkdir -p "$root"
      registry_config "$WORK/distribution.yml" "$root" "$DI_PORT" "http://127.0.0.1:$UP_PORT"
      docker-registry serve "$WORK/distribution.yml" >>"$logf" 2>&1 &
      ;;
  esac
  PID[$name]=$!
  local i code
  for i in $(seq 300); do
    code=$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:${PORT[$name]}/v2/" || true)
    [ "$code" = 200 ] && return 0
    kill -0 "${PID[$name]}" 2>/dev/null || { tail -20 "$logf" >&2; unset "PID[$name]"; die "$name exited while starting (log above: $logf)"; }
    sleep 0.1
  done
  tail -20 "$logf" >&2
  die "$name: /v2/ did not answer 200 within 30 s (last status $code)"
}

stop_server() { # name
  local name=$1 p=${PID[$1]:-} i
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null || true
  for i in $(seq 100); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  if kill -0 "$p" 2>/dev/null; then
    log "$name (pid $p) still running 10 s after SIGTERM; sending SIGKILL"
    echo "$name did not exit within 10 s of SIGTERM" >>"$WORK/problems.txt"
    kill -KILL "$p" 2>/dev/null || true
  fi
  wait "$p" 2>/dev/null || true
  unset "PID[$name]"
}

restart_empty() { # cache name: stop, wipe its root, start
  stop_server "$1"
  start_server "$1"
}

# --- CSV ---------------------------------------------------------------------------------------------------
mkdir -p "$OUT"
CSV=$OUT/cache-server.csv
echo "scenario,server,metric,value" >"$CSV"
record() { # scenario server metric value
  local v=${4//\"/\'}
  [[ $v == *,* || $v == *\ * ]] && v="\"$v\""
  echo "$1,$2,$3,$v" >>"$CSV"
}
: >"$WORK/problems.txt"
problem() { log "PROBLEM: $*"; echo "$*" >>"$WORK/problems.txt"; }

# --- upstream byte counter (from the upstream's own log) ------------------------------------------------------
log_offset() { stat -c %s "$UP_LOG"; }
# Waits until the upstream log has not grown for 3 s (responses are logged when they complete), max 120 s.
upstream_quiet() {
  local last=-1 same=0 i size
  for i in $(seq 240); do
    size=$(log_offset)
    if [ "$size" = "$last" ]; then same=$((same + 1)); ((same >= 6)) && return 0; else same=0; last=$size; fi
    sleep 0.5
  done
  problem "upstream log still growing 120 s after a scenario"
}
upstream_bytes_since() { # offset -> bytes written for GET .../blobs/ and .../manifests/ since the offset
  upstream_quiet
  tail -c +"$(($1 + 1))" "$UP_LOG" | python3 -c '
import re, sys
method = re.compile(r"\bhttp\.request\.method=(\S+)")
uri = re.compile(r"\bhttp\.request\.uri=(\"(?:[^\"\\]|\\.)*\"|\S+)")
written = re.compile(r"\bhttp\.response\.written=(\d+)")
path = re.compile(r"^/v2/.+/(blobs|manifests)/")
total = 0
for line in sys.stdin:
    w, m, u = written.search(line), method.search(line), uri.search(line)
    if w and m and u and m.group(1) == "GET" and path.match(u.group(1).strip("\"")):
        total += int(w.group(1))
print(total)'
}
slipway_metric() { # name -> value summed over label sets, or empty
  curl -sf "http://127.0.0.1:$SW_PORT/metrics" 2>/dev/null | python3 -c '
import sys
name, total, seen = sys.argv[1], 0.0, False
for line in sys.stdin:
    if line.startswith("#"): continue
    parts = line.split()
    if len(parts) >= 2 and (parts[0] == name or parts[0].startswith(name + "{")):
        total += float(parts[1]); seen = True
print("%d" % total if seen else "")' "$1" || true
}

# --- test content ------------------------------------------------------------------------------------------
make_layout() { # MiB -> path of a cached OCI layout (tag "1") with one random uncompressed tar layer
  local mib=$1 dir=$GEN_CACHE/random-${1}mib
  if [ -f "$dir/complete" ]; then log "using the cached $mib MiB layout $dir"; echo "$dir"; return; fi
  log "generating a $mib MiB random layer as an OCI layout in $dir (kept for reruns)"
  rm -rf "$dir" "$dir.tmp" && mkdir -p "$dir.tmp"
  python3 - "$dir.tmp" "$mib" <<'PY'
import hashlib, io, json, os, sys, tarfile
out, mib = sys.argv[1], int(sys.argv[2])
size = mib << 20
os.makedirs(f"{out}/blobs/sha256")
def put(data):
    h = hashlib.sha256(data).hexdigest()
    open(f"{out}/blobs/sha256/{h}", "wb").write(data)
    return "sha256:" + h, len(data)
h, n = hashlib.sha256(), 0
with open(f"{out}/layer.tmp", "wb") as f:
    def w(b):
        global n
        f.write(b); h.update(b); n += len(b)
    ti = tarfile.TarInfo("random.bin")
    ti.size, ti.mode, ti.mtime, ti.uname, ti.gname = size, 0o644, 1767225600, "root", "root"
    w(ti.tobuf(format=tarfile.USTAR_FORMAT))
    left = size
    while left:
        k = min(left, 8 << 20); w(os.urandom(k)); left -= k
    w(b"\0" * ((-size) % 512 + 1024))
layer = "sha256:" + h.hexdigest()
os.rename(f"{out}/layer.tmp", f"{out}/blobs/sha256/{h.hexdigest()}")
config = json.dumps({"architecture": "amd64", "os": "linux", "config": {},
                     "rootfs": {"type": "layers", "diff_ids": [layer]}}).encode()
cd, cs = put(config)
manifest = json.dumps({"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
    "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd, "size": cs},
    "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": layer, "size": n}]}).encode()
md, ms = put(manifest)
json.dump({"schemaVersion": 2, "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json",
    "digest": md, "size": ms, "annotations": {"org.opencontainers.image.ref.name": "1"}}]}, open(f"{out}/index.json", "w"))
open(f"{out}/oci-layout", "w").write('{"imageLayoutVersion":"1.0.0"}')
PY
  touch "$dir.tmp/complete"
  mv "$dir.tmp" "$dir"
  echo "$dir"
}

OCI_MANIFEST=application/vnd.oci.image.manifest.v1+json
layer_of() { # repo -> "digest size" of the first layer, from the upstream's manifest
  curl -sf -H "Accept: $OCI_MANIFEST" "http://127.0.0.1:$UP_PORT/v2/$1/manifests/1" |
    python3 -c 'import json, sys; l = json.load(sys.stdin)["layers"][0]; print(l["digest"], l["size"])'
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
log "scratch directory $WORK; ports: upstream $UP_PORT, slipway $SW_PORT, distribution $DI_PORT"
BIG_LAYOUT=$(make_layout "$BIG_MIB")
SMALL_LAYOUT=$(make_layout "$SMALL_MIB")

log "starting the upstream docker-registry on 127.0.0.1:$UP_PORT"
start_server upstream
for pair in "big:$BIG_LAYOUT" "small:$SMALL_LAYOUT"; do
  log "pushing ${pair#*:} to the upstream as bench/${pair%%:*}:1"
  skopeo copy -q --preserve-digests --dest-tls-verify=false "oci:${pair#*:}:1" \
    "docker://127.0.0.1:$UP_PORT/bench/${pair%%:*}:1" >&2
done
read -r BIG_DIGEST BIG_SIZE < <(layer_of bench/big)
read -r SMALL_DIGEST SMALL_SIZE < <(layer_of bench/small)
[ -f "$BIG_LAYOUT/blobs/sha256/${BIG_DIGEST#sha256:}" ] || die "upstream manifest names $BIG_DIGEST, not the pushed layer"
log "big layer $BIG_DIGEST ($BIG_SIZE bytes), small layer $SMALL_DIGEST ($SMALL_SIZE bytes)"
record setup upstream big_blob_bytes "$BIG_SIZE"
record setup upstream small_blob_bytes "$SMALL_SIZE"

log "starting the caches: slipway serve on 127.0.0.1:$SW_PORT, docker-registry proxy on 127.0.0.1:$DI_PORT"
start_server slipway
start_server distribution

# --- scenario 1: N concurrent cold clients ------------------------------------------------------------------
concurrent() { # server
  local server=$1 url i dl=$WORK/dl off t0 t1 ok=0 bad=0 m0=
  url="http://127.0.0.1:${PORT[$server]}/v2/bench/big/blobs/$BIG_DIGEST"
  [ "$server" = direct ] || restart_empty "$server"
  [ "$server" = slipway ] && m0=$(slipway_metric slipway_cache_upstream_bytes_total)
  rm -rf "$dl" && mkdir -p "$dl"
  drop_caches
  off=$(log_offset)
  log "concurrent: $CLIENTS parallel curl of the $BIG_SIZE-byte blob from $server ($url)"
  CLIENT_PIDS=()
  t0=$(now)
  for i in $(seq "$CLIENTS"); do
    (
      set +e
      curl -sS -f -w '%{stderr}RESULT %{http_code} %{size_download} %{time_total}\n' "$url" 2>"$dl/$i.meta" |
        openssl dgst -sha256 -r >"$dl/$i.sha"
      echo "${PIPESTATUS[0]}" >"$dl/$i.rc"
    ) &
    CLIENT_PIDS+=($!)
  done
  for i in "${CLIENT_PIDS[@]}"; do wait "$i" || true; done
  t1=$(now)
  CLIENT_PIDS=()
  local times=() rc sha res
  for i in $(seq "$CLIENTS"); do
    rc=$(cat "$dl/$i.rc" 2>/dev/null || echo '?')
    sha=$(cut -d' ' -f1 "$dl/$i.sha" 2>/dev/null || true)
    res=$(grep '^RESULT ' "$dl/$i.meta" | tail -1 || true)
    if [ "$rc" = 0 ] && [ "sha256:$sha" = "$BIG_DIGEST" ]; then
      ok=$((ok + 1)); times+=("$(echo "$res" | cut -d' ' -f4)")
    else
      bad=$((bad + 1))
      problem "concurrent/$server client $i: curl exit $rc, ${res:-no result}, sha256 ${sha:-none}, $(grep -v '^RESULT ' "$dl/$i.meta" | tr '\n' ' ')"
    fi
  done
  local up ratio
  up=$(upstream_bytes_since "$off")
  ratio=$(python3 -c "print(f'{$up / $BIG_SIZE:.3f}')")
  record concurrent "$server" wall_seconds "$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  record concurrent "$server" clients_ok "$ok"
  record concurrent "$server" clients "$CLIENTS"
  if ((${#times[@]})); then
    record concurrent "$server" client_seconds_mean "$(python3 -c "import statistics, sys; print(f'{statistics.mean(map(float, sys.argv[1:])):.3f}')" "${times[@]}")"
    record concurrent "$server" client_seconds_max "$(python3 -c "import sys; print(f'{max(map(float, sys.argv[1:])):.3f}')" "${times[@]}")"
  fi
  record concurrent "$server" upstream_bytes "$up"
  record concurrent "$server" upstream_ratio "$ratio"
  if [ "$server" = slipway ]; then
    local m1
    m1=$(slipway_metric slipway_cache_upstream_bytes_total)
    [ -n "$m1" ] && record concurrent slipway metrics_upstream_bytes "$((m1 - ${m0:-0}))"
    local name
    for name in fills_started blob_fill_joins blob_misses blob_hits fills_failed upstream_errors; do
      m1=$(slipway_metric "slipway_cache_${name}_total")
      [ -z "$m1" ] || record concurrent slipway "metrics_$name" "$m1"
    done
  fi
  rm -rf "$dl"
  log "concurrent/$server: $ok/$CLIENTS ok in $(python3 -c "print(f'{$t1 - $t0:.2f}')") s, upstream bytes $up (x$ratio of the blob)"
}
for server in slipway distribution direct; do concurrent "$server"; done

# --- scenario 2: cold, warm and direct pulls --------------------------------------------------------------------
pull() { # scenario server run
  local scenario=$1 server=$2 run=$3 dest=$WORK/pull-out off t0 t1 rc=0 up
  rm -rf "$dest"
  drop_caches
  off=$(log_offset)
  log "$scenario pull $run/$REPS from $server"
  t0=$(now)
  skopeo copy -q --src-tls-verify=false --dest-oci-accept-uncompressed-layers \
    "docker://127.0.0.1:${PORT[$server]}/bench/big:1" "oci:$dest:1" >"$WORK/skopeo.out" 2>&1 || rc=$?
  t1=$(now)
  if ((rc != 0)); then
    problem "$scenario pull $run from $server: skopeo exit $rc: $(tr '\n' ' ' <"$WORK/skopeo.out")"
    record "${scenario}_pull" "$server" "failed_run$run" "$rc"
    return
  fi
  [ -f "$dest/blobs/sha256/${BIG_DIGEST#sha256:}" ] || problem "$scenario pull $run from $server: layer missing from the output"
  up=$(upstream_bytes_since "$off")
  record "${scenario}_pull" "$server" "seconds_run$run" "$(python3 -c "print(f'{$t1 - $t0:.3f}')")"
  record "${scenario}_pull" "$server" "upstream_bytes_run$run" "$up"
  rm -rf "$dest"
  log "$scenario pull $run from $server: $(python3 -c "print(f'{$t1 - $t0:.2f}')") s, upstream bytes $up"
}
for run in $(seq "$REPS"); do
  for server in slipway distribution; do
    restart_empty "$server"
    pull cold "$server" "$run"
    pull warm "$server" "$run"
  done
  pull direct direct "$run"
done

# --- scenario 3: warm throughput -------------------------------------------------------------------------------
for server in slipway distribution; do
  url="http://127.0.0.1:${PORT[$server]}/v2/bench/small/blobs/$SMALL_DIGEST"
  log "throughput: warming the $SMALL_SIZE-byte blob through $server"
  sha=$(curl -sf "$url" | openssl dgst -sha256 -r | cut -d' ' -f1) || true
  [ "sha256:$sha" = "$SMALL_DIGEST" ] || problem "throughput/$server: warm-up GET gave sha256 ${sha:-nothing}"
  sleep 1
  off=$(log_offset)
  log "throughput: wrk -t2 -c16 -d${WRK_SECONDS}s on $server"
  wrk -t2 -c16 -d"${WRK_SECONDS}s" "$url" >"$WORK/wrk-$server.txt" 2>&1 || problem "throughput/$server: wrk failed: $(cat "$WORK/wrk-$server.txt")"
  sed 's/^/    /' "$WORK/wrk-$server.txt" >&2
  python3 - "$WORK/wrk-$server.txt" "$SMALL_SIZE" "$server" >>"$CSV" <<'PY'
import re, sys
text, size, server = open(sys.argv[1]).read(), int(sys.argv[2]), sys.argv[3]
def num(pattern):
    m = re.search(pattern, text)
    return m.group(1) if m else None
rps = num(r"Requests/sec:\s*([\d.]+)")
reqs = num(r"(\d+) requests in")
non2xx = num(r"Non-2xx or 3xx responses:\s*(\d+)") or "0"
errs = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
if rps:
    print(f"throughput,{server},requests_per_s,{float(rps):.1f}")
    print(f"throughput,{server},mb_per_s,{float(rps) * size / 1e6:.1f}")
if reqs: print(f"throughput,{server},requests,{reqs}")
print(f"throughput,{server},non_2xx,{non2xx}")
print(f"throughput,{server},socket_errors,{sum(map(int, errs.groups())) if errs else 0}")
PY
  record throughput "$server" upstream_bytes "$(upstream_bytes_since "$off")"
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)
for server in slipway distribution; do
  kill -0 "${PID[$server]}" 2>/dev/null || problem "$server is no longer running at the end (log: $WORK/$server.log)"
done

# --- report ------------------------------------------------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
DIRTY=$(git status --porcelain -- Sources Package.swift 2>/dev/null | head -1)
FACTS=$(printf '%s\n' \
  "- date: $(date -u '+%Y-%m-%d %H:%M UTC'); command: \`$INVOCATION\`" \
  "- machine: nproc $(nproc) ($CPU), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, kernel $(uname -sr), scratch on $(df -T "$WORK" | awk 'NR==2 {print $2}') ($WORKDIR)" \
  "- slipway: $SLIPWAY, $("$SLIPWAY" --version 2>/dev/null | head -1), repository at git $(git rev-parse --short HEAD)${DIRTY:+ with uncommitted changes in Sources/Package.swift} (binary built $(date -u -r "$SLIPWAY" '+%Y-%m-%d %H:%M UTC')); \`slipway serve --upstream http://127.0.0.1:UP --listen 127.0.0.1:PORT --root EMPTY_DIR${SLIPWAY_SERVE_ARGS:+ $SLIPWAY_SERVE_ARGS}\`, default access log (a JSON line per request on stderr, to a file)" \
  "- distribution: $(docker-registry --version 2>&1 | head -1) (Debian $(dpkg-query -W -f '${Version}' docker-registry)), proxy mode (\`proxy: remoteurl: http://127.0.0.1:UP\`), filesystem storage, default log level info (a line per request, to a file); the upstream is the same binary" \
  "- clients: $(skopeo --version), $(curl --version | head -1 | cut -d' ' -f1-2), $(wrk --version 2>&1 | head -1 | cut -d' ' -f1-2), openssl dgst -sha256" \
  "- content: bench/big:1 one uncompressed tar layer of $BIG_SIZE bytes (${BIG_MIB} MiB random file); bench/small:1 one of $SMALL_SIZE bytes; all servers on 127.0.0.1, plain HTTP" \
  "- $COLD_NOTE; each cold scenario restarts the cache with an empty root; $REPS repetitions of cold, warm and direct pulls, interleaved" \
  "- load average (1/5/15 min) before the runs $LOAD_BEFORE (anything else running skews the figures), after $LOAD_AFTER (includes the benchmark's own clients)")
python3 bench/cache_server_report.py "$CSV" "$OUT/cache-server.md" "$FACTS" "$WORK/problems.txt" \
  --clients "$CLIENTS" --wrk "wrk -t2 -c16 -d${WRK_SECONDS}s"
log "results: $OUT/cache-server.md, $CSV"
