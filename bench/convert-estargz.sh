#!/usr/bin/env bash
# Benchmark: `slipway convert --to estargz` against the reference Go implementation, estargz.Build from
# containerd/stargz-snapshotter (Debian golang-github-containerd-stargz-snapshotter-dev), on the same
# generated image (an OCI layout of gzip layers: thousands of small Python files, shared objects, large
# compressible and incompressible data; bench/generate_estargz_tree.py).
#
# Per run and per gzip level, each from a cold page cache (sync; drop_caches) and with fresh outputs:
#   slipway   `slipway convert --store S oci:IN:img oci:OUT:img --to estargz --chunk-size C --compression-level L`
#             (fresh store S each run, so it includes importing the source layout and writing OUT)
#   reference bench/estargz-reference over each layer blob of IN in turn (-chunk-size C -level L);
#             time = wall clock of the whole sequence (each call's own figure is in the CSV too)
# Results: $OUT/convert-estargz.md and $OUT/convert-estargz.csv (one row per tool, level and run).
#
#   bench/convert-estargz.sh                         # 3 runs, 400 MB, 4 MiB chunks, levels "9 <slipway default>"
#   bench/convert-estargz.sh --size-mb 100 --runs 2 --levels "9 6 1"
#
# Options (environment variable in brackets):
#   --runs N          runs per tool and level [RUNS=3]
#   --size-mb N       uncompressed size of the generated image in MB [SIZE_MB=400]
#   --chunk-size N    eStargz chunk size in bytes [CHUNK_SIZE=4194304, the reference default]
#   --levels "A B"    gzip levels; "default" means slipway's own default, read from the binary
#                     [LEVELS="9 default"; 9 is the reference default]. A level the slipway binary rejects
#                     (exit 2, e.g. 9 before the libdeflate writer) is recorded as rejected; the reference
#                     still runs at it.
#   --out DIR         where the .md and .csv go [OUT=bench/results]
#   --slipway BIN     use this slipway binary instead of building one [SLIPWAY]
#   --slipway-rev REV build slipway from a git revision (git archive into .build-bench-rev/src) instead of
#                     the working tree [SLIPWAY_REV]
#   --ref-tar-input   also time the reference on the uncompressed layer tars (shows what its single-threaded
#                     gunzip of the input costs) [REF_TAR_INPUT=1]
#   --workdir DIR     parent of the scratch directory [WORKDIR=/var/tmp]
#   --keep            keep the scratch directory
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
INVOCATION="bench/convert-estargz.sh $*"

RUNS=${RUNS:-3}
SIZE_MB=${SIZE_MB:-400}
CHUNK_SIZE=${CHUNK_SIZE:-4194304}
LEVELS=${LEVELS:-9 default}
OUT=${OUT:-bench/results}
SLIPWAY=${SLIPWAY:-}
SLIPWAY_REV=${SLIPWAY_REV:-}
REF_TAR_INPUT=${REF_TAR_INPUT:-0}
WORKDIR=${WORKDIR:-/var/tmp}
KEEP=${KEEP:-0}
while (($#)); do
  case $1 in
    --runs) RUNS=$2; shift 2 ;;
    --size-mb) SIZE_MB=$2; shift 2 ;;
    --chunk-size) CHUNK_SIZE=$2; shift 2 ;;
    --levels) LEVELS=$2; shift 2 ;;
    --out) OUT=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --slipway-rev) SLIPWAY_REV=$2; shift 2 ;;
    --ref-tar-input) REF_TAR_INPUT=1; shift ;;
    --workdir) WORKDIR=$2; shift 2 ;;
    --keep) KEEP=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done

log() { printf '[%s] %s\n' "$(date +%T)" "$*" >&2; }
now() { date +%s.%N; }

# --- tools -------------------------------------------------------------------------------------------------
GOPATH_REF=/usr/share/gocode
if ! command -v go >/dev/null || [ ! -f $GOPATH_REF/src/github.com/containerd/stargz-snapshotter/estargz/build.go ]; then
  log "installing golang-go and golang-github-containerd-stargz-snapshotter-dev"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq golang-go golang-github-containerd-stargz-snapshotter-dev >/dev/null
fi
for tool in python3 tar go; do command -v $tool >/dev/null || { echo "needs $tool" >&2; exit 1; }; done

# --- slipway (release) ---------------------------------------------------------------------------------------
if [ -n "$SLIPWAY" ]; then
  SLIPWAY_DESC="given binary $SLIPWAY"
elif [ -n "$SLIPWAY_REV" ]; then
  REV=$(git rev-parse --verify "$SLIPWAY_REV^{commit}")
  log "building slipway (release) from $REV in .build-bench-rev"
  rm -rf .build-bench-rev/src && mkdir -p .build-bench-rev/src
  git archive "$REV" | tar -x -C .build-bench-rev/src
  [ -f Package.resolved ] && cp Package.resolved .build-bench-rev/src/
  (cd .build-bench-rev/src && swift build -c release --product slipway --scratch-path ../scratch >../build.log 2>&1) ||
    { tail -30 .build-bench-rev/build.log >&2; exit 1; }
  SLIPWAY="$REPO/.build-bench-rev/scratch/release/slipway"
  SLIPWAY_DESC="git $REV (clean export), swift build -c release"
else
  log "building slipway (release) from the working tree in .build-bench"
  mkdir -p .build-bench
  swift build -c release --product slipway --scratch-path .build-bench >.build-bench/build.log 2>&1 ||
    { tail -30 .build-bench/build.log >&2; echo "swift build failed (log: .build-bench/build.log)" >&2; exit 1; }
  SLIPWAY="$(swift build -c release --scratch-path .build-bench --show-bin-path)/slipway"
  SLIPWAY_DESC="working tree at $(git rev-parse --short HEAD)$([ -z "$(git status --porcelain -- Sources Package.swift)" ] || echo ' + uncommitted changes'), swift build -c release"
fi
SLIPWAY=$(readlink -f "$SLIPWAY")

# Slipway's own default level and the --compression-level help, from the argument parser's JSON dump
# (plain --help also works, but some builds print it as an error).
read -r SLIPWAY_DEFAULT_LEVEL SLIPWAY_LEVEL_HELP < <("$SLIPWAY" convert --experimental-dump-help 2>/dev/null | python3 -c '
import json, sys
try:
    for a in json.load(sys.stdin)["command"]["arguments"]:
        if a.get("preferredName", {}).get("name") == "compression-level":
            print(a.get("defaultValue", "?"), a.get("abstract", "")); break
    else: print("? (no --compression-level option)")
except Exception as e: print("? (could not read the help: %s)" % e)') || true
: "${SLIPWAY_DEFAULT_LEVEL:=?}"
LEVEL_LIST=()
for l in $LEVELS; do
  if [ "$l" = default ]; then
    [ "$SLIPWAY_DEFAULT_LEVEL" = "?" ] && { echo "cannot read slipway's default level; give numbers in --levels" >&2; exit 1; }
    l=$SLIPWAY_DEFAULT_LEVEL
  fi
  [[ " ${LEVEL_LIST[*]} " == *" $l "* ]] || LEVEL_LIST+=("$l")
done

# --- reference ---------------------------------------------------------------------------------------------
mkdir -p .build-bench/estargz-reference
REFBIN="$REPO/.build-bench/estargz-reference/estargz-reference"
log "building bench/estargz-reference"
(cd bench/estargz-reference && GOPATH=$GOPATH_REF GO111MODULE=off GOFLAGS= GOCACHE="$REPO/.build-bench/estargz-reference/gocache" \
  go build -o "$REFBIN" main.go)
REF_PKG=$(dpkg-query -W -f '${Package} ${Version}' golang-github-containerd-stargz-snapshotter-dev 2>/dev/null || echo "stargz-snapshotter (not from dpkg)")

# --- input image -------------------------------------------------------------------------------------------
WORK=$(mktemp -d "$WORKDIR/slipway-esgz-bench.XXXXXX")
cleanup() { if [ "$KEEP" = 1 ]; then log "kept $WORK"; else rm -rf "$WORK"; fi; }
trap cleanup EXIT
mkdir -p "$WORK/tmp"
log "generating a $SIZE_MB MB tree and its image in $WORK"
python3 bench/generate_estargz_tree.py "$WORK/tree" "$SIZE_MB"
FILES=$(find "$WORK/tree" -type f | wc -l)
layer_args=()
for part in os site data; do
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1767225600 -C "$WORK/tree/$part" -cf "$WORK/$part.tar" .
  layer_args+=(--layer "$WORK/$part.tar")
done
rm -rf "$WORK/tree"
"$SLIPWAY" assemble -q "oci:$WORK/in:img" "${layer_args[@]}" >/dev/null
TAR_BYTES=$(cat "$WORK"/*.tar | wc -c)
if [ "$REF_TAR_INPUT" = 1 ]; then mkdir -p "$WORK/tars" && mv "$WORK"/*.tar "$WORK/tars/"; else rm -f "$WORK"/*.tar; fi
IN_JSON=$("$SLIPWAY" inspect --json "oci:$WORK/in:img")
mapfile -t LAYER_BLOBS < <(python3 -c '
import json, sys
for l in json.loads(sys.argv[1])["layers"]: print(sys.argv[2] + "/blobs/sha256/" + l["digest"].split(":")[1])' "$IN_JSON" "$WORK/in")
IN_BYTES=$(cat "${LAYER_BLOBS[@]}" | wc -c)
log "image: ${#LAYER_BLOBS[@]} layers, $FILES files, $TAR_BYTES bytes of tar, $IN_BYTES bytes gzip"

# --- runs --------------------------------------------------------------------------------------------------
if [ -w /proc/sys/vm/drop_caches ]; then
  COLD_NOTE="page, dentry and inode caches dropped before every run (sync; echo 3 > /proc/sys/vm/drop_caches)"
  cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
else
  COLD_NOTE="caches NOT dropped (not root): runs read warm data"
  cold() { sync; }
fi
mkdir -p "$OUT"
CSV="$OUT/convert-estargz.csv"
echo "tool,level,run,seconds,output_bytes,inner_seconds,detail,status" >"$CSV"
declare -A REJECTED=()

run_slipway() { # level run
  local level=$1 run=$2 t0 t1 rc=0
  rm -rf "$WORK/store" "$WORK/out"
  cold
  t0=$(now)
  "$SLIPWAY" convert -q --json --store "$WORK/store" "oci:$WORK/in:img" "oci:$WORK/out:img" \
    --to estargz --chunk-size "$CHUNK_SIZE" --compression-level "$level" >"$WORK/slipway.json" 2>"$WORK/slipway.err" || rc=$?
  t1=$(now)
  if ((rc != 0)); then
    local msg
    msg=$(tr '\n"' ' \047' <"$WORK/slipway.err" | sed 's/ *$//')
    if ((rc == 2)); then REJECTED[$level]="rejected by this binary (exit 2): $msg"; else REJECTED[$level]="failed (exit $rc): $msg"; fi
    log "slipway level $level: ${REJECTED[$level]}"
    echo "slipway,$level,$run,,,,,\"${REJECTED[$level]}\"" >>"$CSV"
    return
  fi
  # Output size: the converted layers; the layout's index/manifest/config are the same few KB for both tools.
  python3 - "$WORK/slipway.json" "$("$SLIPWAY" inspect --json "oci:$WORK/out:img")" "$level" "$run" "$t0" "$t1" >>"$CSV" <<'PY'
import json, sys
report, image, level, run, t0, t1 = json.load(open(sys.argv[1])), json.loads(sys.argv[2]), *sys.argv[3:]
layers = image["layers"]
status = "ok" if all(l.get("estargz") for l in layers) else "NOT eStargz: " + ",".join(str(bool(l.get("estargz"))) for l in layers)
inner = report.get("seconds", report.get("convert", {}).get("seconds", ""))  # report at top level, or under "convert" (before 2fa78c5)
print(f"slipway,{level},{run},{float(t1) - float(t0):.3f},{sum(l['size'] for l in layers)},{inner if inner == '' else f'{inner:.3f}'},,{status}")
PY
}

run_reference() { # tool-name level run input-files...
  local tool=$1 level=$2 run=$3 t0 t1 i=0
  shift 3
  rm -rf "$WORK/refout" && mkdir -p "$WORK/refout"
  : >"$WORK/ref.jsonl"
  cold
  t0=$(now)
  for blob in "$@"; do
    if ! TMPDIR="$WORK/tmp" "$REFBIN" -chunk-size "$CHUNK_SIZE" -level "$level" -in "$blob" -out "$WORK/refout/$i" \
      >>"$WORK/ref.jsonl" 2>"$WORK/ref.err"; then
      log "$tool level $level: $(cat "$WORK/ref.err")"
      echo "$tool,$level,$run,,,,,\"failed: $(tr '\n"' ' \047' <"$WORK/ref.err")\"" >>"$CSV"
      return
    fi
    i=$((i + 1))
  done
  t1=$(now)
  python3 - "$WORK/ref.jsonl" "$tool" "$level" "$run" "$t0" "$t1" >>"$CSV" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1])]
tool, level, run, t0, t1 = sys.argv[2:]
print(f"{tool},{level},{run},{float(t1) - float(t0):.3f},{sum(r['output_bytes'] for r in rows)},"
      f"{sum(r['seconds'] for r in rows):.3f},build={sum(r['build_seconds'] for r in rows):.3f} copy={sum(r['copy_seconds'] for r in rows):.3f},"
      f"ok gomaxprocs={rows[0]['gomaxprocs']}")
PY
}

LOAD_BEFORE=$(cut -d' ' -f1-3 /proc/loadavg)
for run in $(seq "$RUNS"); do
  for level in "${LEVEL_LIST[@]}"; do
    if [ -z "${REJECTED[$level]:-}" ]; then
      log "run $run/$RUNS level $level: slipway"
      run_slipway "$level" "$run"
    fi
    log "run $run/$RUNS level $level: reference"
    run_reference reference "$level" "$run" "${LAYER_BLOBS[@]}"
    if [ "$REF_TAR_INPUT" = 1 ]; then
      log "run $run/$RUNS level $level: reference, tar input"
      run_reference "reference (tar input)" "$level" "$run" "$WORK"/tars/{os,site,data}.tar
    fi
  done
done

LOAD_AFTER=$(cut -d' ' -f1-3 /proc/loadavg)

# --- report ------------------------------------------------------------------------------------------------
CPU=$(lscpu 2>/dev/null | sed -n 's/^Model name: *//p' | head -1)
[ -n "$CPU" ] || CPU=$(sed -n 's/^model name\t*: //p' /proc/cpuinfo | head -1)
FACTS=$(printf '%s\n' \
  "- machine: $(nproc) CPUs ($CPU), $(free -g | awk '/^Mem:/ {print $2}') GiB RAM, $(uname -sr), scratch on $(df -T "$WORK" | awk 'NR==2 {print $2}') ($WORK)" \
  "- slipway: $SLIPWAY_DESC; --compression-level help: \"$SLIPWAY_LEVEL_HELP\" (default $SLIPWAY_DEFAULT_LEVEL)" \
  "- reference: estargz.Build from $REF_PKG, $(go version | cut -d' ' -f3), GOMAXPROCS=$(nproc) (Build splits each layer into GOMAXPROCS parts); its temporary files in the scratch directory" \
  "- image: ${#LAYER_BLOBS[@]} layers (os, site, data), $FILES regular files, $TAR_BYTES bytes of tar, $IN_BYTES bytes as gzip layers (slipway assemble)" \
  "- chunk size $CHUNK_SIZE; $RUNS runs per tool and level, interleaved; $COLD_NOTE" \
  "- load average (1/5/15 min) before the runs $LOAD_BEFORE, after $LOAD_AFTER: anything else running skews the figures" \
  "- command: \`$INVOCATION\` (RUNS=$RUNS SIZE_MB=$SIZE_MB CHUNK_SIZE=$CHUNK_SIZE LEVELS=\"${LEVEL_LIST[*]}\")" \
  "- slipway per run: \`slipway convert -q --json --store S oci:IN:img oci:OUT:img --to estargz --chunk-size $CHUNK_SIZE --compression-level L\`, fresh S and OUT" \
  "- reference per run: \`estargz-reference -chunk-size $CHUNK_SIZE -level L -in BLOB -out F\` for each layer blob of IN in turn (bench/estargz-reference/main.go)")
python3 - "$CSV" "$OUT/convert-estargz.md" "$SIZE_MB" "$FACTS" <<'PY'
import csv, statistics, sys
path, md, size, facts = sys.argv[1:]
all_rows = list(csv.DictReader(open(path)))
rows = [r for r in all_rows if r["seconds"]]
groups = {}
for r in rows:
    groups.setdefault((r["tool"], int(r["level"])), []).append(r)
ref = {level: g for (tool, level), g in groups.items() if tool == "reference"}
def mean(g, key): return statistics.mean(float(r[key]) for r in g)
def sd(g, key): return statistics.stdev(float(r[key]) for r in g) if len(g) > 1 else 0.0
lines = [f"# eStargz conversion: slipway convert vs estargz.Build, {size} MiB generated image", "",
         facts, "", "Output MB = sum of the converted layer blobs (10^6 bytes). Ratios are against the reference at the same level.", "",
         "| tool | level | runs | mean ± sd s | min s | output MB | time / reference | size / reference | size / reference at 9 |",
         "|---|---|---|---|---|---|---|---|---|"]
for (tool, level), g in sorted(groups.items(), key=lambda kv: (-kv[0][1], kv[0][0] != "slipway", kv[0][0])):
    secs, out = mean(g, "seconds"), mean(g, "output_bytes")
    r, r9 = ref.get(level), ref.get(9)
    tr = f"{secs / mean(r, 'seconds'):.2f}" if r else "–"
    sr = f"{out / mean(r, 'output_bytes'):.3f}" if r else "–"
    s9 = f"{out / mean(r9, 'output_bytes'):.3f}" if r9 else "–"
    lines.append(f"| {tool} | {level} | {len(g)} | {secs:.2f} ± {sd(g, 'seconds'):.2f} | {min(float(x['seconds']) for x in g):.2f} "
                 f"| {out / 1e6:.1f} | {tr} | {sr} | {s9} |")
problems = {}
for r in all_rows:
    if not r["status"].startswith("ok"):
        problems.setdefault((r["tool"], r["level"], r["status"].strip()), []).append(r["run"])
if problems:
    lines += ["", "Not measured / problems:", ""]
    lines += [f"- {tool} at level {level}, run {', '.join(runs)}: {status}" for (tool, level, status), runs in problems.items()]
lines += ["", "Per-run figures are in convert-estargz.csv, with each tool's own timing (inner_seconds: slipway's convert",
          "seconds from --json; the sum of the reference's per-layer seconds, split in detail into until-Build-returns",
          "and copying the result out, during which Build decompresses its own output for the diffID)."]
open(md, "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
