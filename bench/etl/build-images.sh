#!/usr/bin/env bash
# Build the ETL images of both benchmarks without Docker and push them to a registry (`slipway bench images`).
#
# Layers, bottom first:
#   1. Debian bookworm minbase (debootstrap --variant=minbase), cached as a tar under --cache;
#   2. python3, python3-numpy, python3-pandas, installed into a copy of that root with chroot apt-get; the
#      layer is what changed (bench/etl/layerdiff.py), with whiteouts for anything deleted; cached too;
#   3. the app: /app/etl.py (bench/etl/etl.py: the 3-stage worker), /app/patch_worker.py (the Patch Tuesday
#      worker), /app/input.csv (generated, ~6 MB), and empty /out, /shared and /data (the harnesses
#      bind-mount host directories over /out and /shared);
#   then, for the lazy-vs-full images (REPO:SIZE):
#   4. /data/asset.bin, incompressible (deterministic: the same bytes every time, so reruns push nothing new):
#      16 MiB (small), 200 MiB (medium, large);
#   5. (large only) /data/extra.bin, 1 GiB, incompressible, never read by the workload;
#   or, for the Patch Tuesday images (PATCH_REPO:vN):
#   4. /version.txt ("vN"), the only difference between v1..vN.
#
# Images (REPO defaults to etl-lazy, PATCH_REPO to etl):
#   REG/PATCH_REPO:vN         base, python, app, version; entrypoint python3 /app/patch_worker.py
#   REG/PATCH_REPO:vN-esgz    `slipway convert --to estargz` of it
#   REG/REPO:SIZE             plain gzip layers (`slipway assemble`, then `slipway copy`)
#   REG/REPO:SIZE-esgz        `slipway convert --to estargz` of it
#   REG/REPO:SIZE-esgz-opt    `slipway convert --prioritize REC` of the plain image, where REC comes from one
#                             run of the workload in `slipway mount --record REC` of the -esgz image
#
#   bench/etl/build-images.sh                            # everything, into WORK/registry
#   bench/etl/build-images.sh --sizes small --versions 2 --registry 127.0.0.1:5001
#
# Options:
#   --registry HOST:PORT  push to this (running) registry instead of starting docker-registry on a free
#                         loopback port over WORK/registry
#   --sizes LIST          comma-separated: small, medium, large; "" for none [small,medium,large]
#   --versions N          Patch Tuesday versions v1..vN; 0 for none [5]
#   --small-mib N         size of small's asset [16]
#   --medium-mib N        size of medium's asset [200]
#   --large-mib N         size of large's asset [200]
#   --large-extra-mib N   size of large's extra (unread) layer [1024]
#   --repo NAME           repository of the lazy-vs-full images [etl-lazy]
#   --patch-repo NAME     repository of the Patch Tuesday images [etl]
#   --cache DIR           debootstrap and python layer cache [/var/cache/slipway-bench]
#   --work DIR            scratch and registry storage; lazy-vs-full.sh serves WORK/registry
#                         [/var/tmp/slipway-etl]
#   --slipway BIN         use this binary instead of `swift build -c release --scratch-path .build-etl`
#   --mirror URL          Debian mirror [http://deb.debian.org/debian]
#   --force               rebuild images that the registry already has (needed after changing a size:
#                         the tags do not encode the sizes)
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO_ROOT=$PWD

REGISTRY=""
SIZES=small,medium,large
VERSIONS=5
SMALL_MIB=16
MEDIUM_MIB=200
LARGE_MIB=200
LARGE_EXTRA_MIB=1024
REPO=etl-lazy
PATCH_REPO=etl
CACHE=/var/cache/slipway-bench
WORK=/var/tmp/slipway-etl
SLIPWAY=${SLIPWAY:-}
MIRROR=http://deb.debian.org/debian
FORCE=0
while (($#)); do
  case $1 in
    --registry) REGISTRY=$2; shift 2 ;;
    --sizes) SIZES=$2; shift 2 ;;
    --versions) VERSIONS=$2; shift 2 ;;
    --small-mib) SMALL_MIB=$2; shift 2 ;;
    --medium-mib) MEDIUM_MIB=$2; shift 2 ;;
    --large-mib) LARGE_MIB=$2; shift 2 ;;
    --large-extra-mib) LARGE_EXTRA_MIB=$2; shift 2 ;;
    --repo) REPO=$2; shift 2 ;;
    --patch-repo) PATCH_REPO=$2; shift 2 ;;
    --cache) CACHE=$2; shift 2 ;;
    --work) WORK=$2; shift 2 ;;
    --slipway) SLIPWAY=$2; shift 2 ;;
    --mirror) MIRROR=$2; shift 2 ;;
    --force) FORCE=1; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
[[ $(id -u) -eq 0 ]] || { echo "build-images.sh needs root (debootstrap, chroot, FUSE mounts)" >&2; exit 1; }
source bench/etl/common.sh

ensure_packages debootstrap docker-registry curl openssl fuse3 libisal-dev libzstd-dev libdeflate-dev libfuse3-dev
ensure_slipway

mkdir -p "$CACHE" "$WORK"
# One build at a time per work directory (two test suites, or a user and a test, may ask at once); the second
# then finds the images pushed.
exec 9>"$WORK/build.lock"
flock 9
TARS=$WORK/tars
mkdir -p "$TARS"
TAR_FLAGS=(--numeric-owner --xattrs --xattrs-include='*' --sort=name)

# --- the registry --------------------------------------------------------------------------------------
REGISTRY_PID=""
MNT=$WORK/record-mnt
cleanup() {
  mountpoint -q "$MNT" 2>/dev/null && "$SLIPWAY" umount --store "$WORK/record-store" "$MNT" 2>/dev/null || true
  [[ -n $REGISTRY_PID ]] && kill "$REGISTRY_PID" 2>/dev/null || true
}
trap cleanup EXIT
if [[ -z $REGISTRY ]]; then
  # A free port, not 5000: Debian's docker-registry package may run its own service there.
  REGISTRY=127.0.0.1:$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
  cat >"$WORK/registry-build.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry}, delete: {enabled: true}}
http: {addr: $REGISTRY}
log: {level: error}
YAML
  docker-registry serve "$WORK/registry-build.yml" >"$WORK/registry-build.log" 2>&1 &
  REGISTRY_PID=$!
  for _ in $(seq 50); do curl -fs "http://$REGISTRY/v2/" >/dev/null && break; sleep 0.1; done
  curl -fs "http://$REGISTRY/v2/" >/dev/null || { echo "docker-registry did not start on $REGISTRY (port taken? use --registry)" >&2; cat "$WORK/registry-build.log" >&2; exit 1; }
  log "docker-registry on $REGISTRY, storage $WORK/registry"
fi
PLAIN=()
case $REGISTRY in localhost:* | 127.*) ;; *) PLAIN=(--plain-http) ;; esac
have_tag() { # REPO TAG
  curl -fs -o /dev/null -H 'Accept: application/vnd.oci.image.manifest.v1+json' "http://$REGISTRY/v2/$1/manifests/$2"
}

# Images built from other workers are rebuilt: the tags do not say which worker they hold, so each image
# records the workers' digest in WORK/stamps/REPO-TAG once it is pushed.
APP_STAMP=$(cat bench/etl/etl.py bench/etl/patch_worker.py | sha256sum | cut -c1-64)
mkdir -p "$WORK/stamps"
needs_build() { # REPO TAG: the tag is missing, was built from other workers, or --force
  ((FORCE)) && return 0
  have_tag "$1" "$2" || return 0
  [[ $(cat "$WORK/stamps/$1-$2" 2>/dev/null) == "$APP_STAMP" ]] && return 1
  log "$1:$2 was built from other ETL workers (or has no record of them): rebuilding"
}
built() { echo "$APP_STAMP" >"$WORK/stamps/$1-$2"; } # REPO TAG

# --- layer 1: Debian bookworm minbase (cached) ----------------------------------------------------------
BASE_TAR=$CACHE/bookworm-minbase.tar
if [[ ! -s $BASE_TAR ]]; then
  log "debootstrap --variant=minbase bookworm (about a minute; cached as $BASE_TAR)"
  root=$CACHE/bookworm-minbase.root
  rm -rf "$root"
  debootstrap --variant=minbase bookworm "$root" "$MIRROR" >"$CACHE/debootstrap.log" 2>&1 ||
    { tail -20 "$CACHE/debootstrap.log" >&2; exit 1; }
  # Like a container image's base: no device nodes, nothing in /proc, /sys, /run; no apt lists, and not the
  # host's resolv.conf (debootstrap copies it in), nor the .debs debootstrap leaves in the apt cache.
  tar -C "$root" "${TAR_FLAGS[@]}" --exclude='./dev/*' --exclude='./proc/*' --exclude='./sys/*' --exclude='./run/*' \
    --exclude='./var/lib/apt/lists/*' --exclude='./var/cache/apt/*.bin' --exclude='./var/cache/apt/archives/*.deb' --exclude='./etc/resolv.conf' -cf "$BASE_TAR.tmp" .
  mv "$BASE_TAR.tmp" "$BASE_TAR"
  rm -rf "$root"
fi

# --- layer 2: python3, numpy, pandas (cached) -----------------------------------------------------------
PY_PACKAGES="python3 python3-numpy python3-pandas"
DEPS_TAR=$CACHE/bookworm-minbase+python3-numpy-pandas.tar
if [[ ! -s $DEPS_TAR ]]; then
  log "installing $PY_PACKAGES into a copy of the base (chroot apt-get; cached as $DEPS_TAR)"
  base=$WORK/base-root new=$WORK/deps-root
  rm -rf "$base" "$new" "$WORK/whiteouts" "$WORK/wh.list"
  mkdir -p "$base" "$new"
  tar -C "$base" --numeric-owner --xattrs --xattrs-include='*' -xpf "$BASE_TAR"
  tar -C "$new" --numeric-owner --xattrs --xattrs-include='*' -xpf "$BASE_TAR"
  resolv_saved=$WORK/resolv.conf.base
  if [[ -e $new/etc/resolv.conf || -L $new/etc/resolv.conf ]]; then cp -a "$new/etc/resolv.conf" "$resolv_saved"; else rm -f "$resolv_saved"; fi
  rm -f "$new/etc/resolv.conf"
  cp /etc/resolv.conf "$new/etc/resolv.conf"
  # A private mount namespace: /proc and /dev in the chroot vanish with it, whatever happens.
  unshare -m --propagation private /bin/sh -ec '
    mount -t proc proc "$1/proc"; mount --rbind /dev "$1/dev"
    chroot "$1" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C.UTF-8 /bin/sh -ec "
      apt-get update -q
      apt-get install -y -q --no-install-recommends $2
      apt-get clean
      rm -rf /var/lib/apt/lists/*"
  ' sh "$new" "$PY_PACKAGES" >"$WORK/apt.log" 2>&1 || { tail -30 "$WORK/apt.log" >&2; exit 1; }
  rm -f "$new/etc/resolv.conf"
  [[ -e $resolv_saved || -L $resolv_saved ]] && cp -a "$resolv_saved" "$new/etc/resolv.conf"
  python3 bench/etl/layerdiff.py "$base" "$new" "$WORK/deps.list" "$WORK/deps.whiteouts" >&2
  tar -C "$new" --numeric-owner --xattrs --xattrs-include='*' --null --no-recursion -T "$WORK/deps.list" -cf "$DEPS_TAR.tmp"
  if [[ -s $WORK/deps.whiteouts ]]; then
    log "the install deleted $(wc -l <"$WORK/deps.whiteouts") base paths; adding whiteouts:"
    sed 's/^/    /' "$WORK/deps.whiteouts" >&2
    wh=$WORK/whiteouts
    rm -rf "$wh"
    mkdir -p "$wh"
    : >"$WORK/wh.list"
    while IFS= read -r rel; do
      mkdir -p "$wh/$(dirname "$rel")"
      : >"$wh/$(dirname "$rel")/.wh.$(basename "$rel")"
      printf './%s\0' "$(dirname "$rel")/.wh.$(basename "$rel")" >>"$WORK/wh.list"
    done <"$WORK/deps.whiteouts"
    tar -C "$wh" --owner=0 --group=0 --numeric-owner --mtime=@1767225600 --null --no-recursion -T "$WORK/wh.list" -rf "$DEPS_TAR.tmp"
  else
    log "the install deleted nothing from the base: no whiteouts needed"
  fi
  mv "$DEPS_TAR.tmp" "$DEPS_TAR"
  rm -rf "$base" "$new" "$WORK/whiteouts"
fi

# --- layer 3: the app -----------------------------------------------------------------------------------
app=$WORK/app-tree
rm -rf "$app"
mkdir -p "$app/app" "$app/out" "$app/data" "$app/shared"
install -m 0755 bench/etl/etl.py "$app/app/etl.py"
install -m 0755 bench/etl/patch_worker.py "$app/app/patch_worker.py"
python3 - "$app/app/input.csv" <<'PY'
import random, sys
r = random.Random(20260101)
regions = [f"R{i:02d}" for i in range(24)]
products = [f"P{i:03d}" for i in range(400)]
with open(sys.argv[1], "w") as f:
    f.write("order_id,region,product,customer,quantity,amount,timestamp\n")
    for i in range(120_000):
        f.write(f"{i},{r.choice(regions)},{r.choice(products)},C{r.randrange(10**6):06d},{r.randint(1, 9)},"
                f"{r.uniform(1, 500):.2f},2026-01-{r.randint(1, 28):02d}T{r.randrange(24):02d}:{r.randrange(60):02d}:00\n")
PY
chmod 0644 "$app/app/input.csv"
DET=(--sort=name --owner=0 --group=0 --numeric-owner --mtime=@1767225600)
tar -C "$app" "${DET[@]}" -cf "$TARS/app.tar" ./app ./out ./data ./shared
log "app layer: $(du -h --apparent-size "$TARS/app.tar" | cut -f1) (etl.py, input.csv $(du -h --apparent-size "$app/app/input.csv" | cut -f1))"

# --- asset layers: deterministic incompressible bytes ---------------------------------------------------
asset_tar() { # NAME MIB -> $TARS/NAME-MIB.tar holding /data/NAME.bin
  local name=$1 mib=$2 tree=$WORK/asset-tree out="$TARS/$1-$2.tar"
  [[ -s $out ]] && return
  rm -rf "$tree"
  mkdir -p "$tree/data"
  openssl enc -aes-128-ctr -nosalt -pbkdf2 -pass "pass:slipway-$name-$mib" -in /dev/zero 2>/dev/null |
    head -c $((mib << 20)) >"$tree/data/$name.bin" || true
  [[ $(stat -c %s "$tree/data/$name.bin") -eq $((mib << 20)) ]] || { echo "could not generate $name.bin" >&2; exit 1; }
  chmod 0644 "$tree/data/$name.bin"
  tar -C "$tree" "${DET[@]}" -cf "$out.tmp" ./data
  mv "$out.tmp" "$out"
  rm -rf "$tree"
}

# --- images ---------------------------------------------------------------------------------------------
BUILD_STORE=$WORK/build-store
run_workload() { # ROOT OUTDIR: the worker in ROOT (chroot), output to OUTDIR bind-mounted at ROOT/out
  bench/etl/run-workload.sh "$1" "$2"
}

# --- Patch Tuesday: etl:v1..vN, identical but for /version.txt ------------------------------------------
for n in $(seq "$VERSIONS"); do
  ref=$REGISTRY/$PATCH_REPO:v$n
  if needs_build "$PATCH_REPO" "v$n-esgz"; then
    tree=$WORK/version-tree
    rm -rf "$tree"
    mkdir -p "$tree"
    printf 'v%s\n' "$n" >"$tree/version.txt"
    chmod 0644 "$tree/version.txt"
    tar -C "$tree" "${DET[@]}" -cf "$TARS/version-$n.tar" ./version.txt
    rm -rf "$tree" "$WORK/layout"
    log "$ref: assemble (gzip) and push, then $ref-esgz"
    "$SLIPWAY" assemble -q --store "$BUILD_STORE" "oci:$WORK/layout:v$n" --entrypoint /usr/bin/python3 /app/patch_worker.py \
      --layer "$BASE_TAR" --layer "$DEPS_TAR" --layer "$TARS/app.tar" --layer "$TARS/version-$n.tar" >/dev/null
    "$SLIPWAY" copy -q "${PLAIN[@]}" "oci:$WORK/layout:v$n" "$ref" >/dev/null
    "$SLIPWAY" convert -q "${PLAIN[@]}" --store "$BUILD_STORE" "$ref" "$ref-esgz" --to estargz >/dev/null
    built "$PATCH_REPO" "v$n-esgz"
  else
    log "$ref: already in the registry (--force to rebuild)"
  fi
done

# --- lazy vs full: etl-lazy:SIZE ------------------------------------------------------------------------
IFS=, read -r -a size_list <<<"$SIZES"
for size in "${size_list[@]}"; do
  case $size in
    small) asset_tar asset "$SMALL_MIB"; layers=("$TARS/asset-$SMALL_MIB.tar") ;;
    medium) asset_tar asset "$MEDIUM_MIB"; layers=("$TARS/asset-$MEDIUM_MIB.tar") ;;
    large) asset_tar asset "$LARGE_MIB"; asset_tar extra "$LARGE_EXTRA_MIB"; layers=("$TARS/asset-$LARGE_MIB.tar" "$TARS/extra-$LARGE_EXTRA_MIB.tar") ;;
    *) echo "unknown size $size (small, medium or large)" >&2; exit 2 ;;
  esac
  ref=$REGISTRY/$REPO:$size
  if needs_build "$REPO" "$size-esgz-opt"; then
    log "$ref: assemble (gzip) and push"
    rm -rf "$WORK/layout"
    "$SLIPWAY" assemble -q --store "$BUILD_STORE" "oci:$WORK/layout:$size" --entrypoint /usr/bin/python3 \
      --layer "$BASE_TAR" --layer "$DEPS_TAR" --layer "$TARS/app.tar" $(printf -- '--layer %s ' "${layers[@]}") >/dev/null
    "$SLIPWAY" copy -q "${PLAIN[@]}" "oci:$WORK/layout:$size" "$ref" >/dev/null
    log "$ref-esgz: slipway convert --to estargz"
    "$SLIPWAY" convert -q "${PLAIN[@]}" --store "$BUILD_STORE" "$ref" "$ref-esgz" --to estargz >/dev/null

    log "$ref-esgz: recording the workload's file accesses (slipway mount --record)"
    rec=$WORK/record-$size.txt
    rm -rf "$WORK/record-store" "$rec" "$WORK/record-out"
    mkdir -p "$MNT" "$WORK/record-out"
    "$SLIPWAY" mount -q "${PLAIN[@]}" --store "$WORK/record-store" --prefetch none --record "$rec" "$ref-esgz" "$MNT" >/dev/null
    rm -rf "$WORK/record-out"
    run_workload "$MNT" "$WORK/record-out"
    "$SLIPWAY" umount --store "$WORK/record-store" "$MNT"
    for _ in $(seq 100); do [[ -s $rec ]] && break; sleep 0.1; done
    [[ -s $rec ]] || { echo "slipway mount --record wrote nothing to $rec" >&2; exit 1; }
    log "recorded $(wc -l <"$rec") paths ($rec); first: $(head -3 "$rec" | tr '\n' ' ')"

    log "$ref-esgz-opt: slipway convert --prioritize"
    "$SLIPWAY" convert -q "${PLAIN[@]}" --store "$BUILD_STORE" --prioritize "$rec" "$ref" "$ref-esgz-opt" --to estargz >/dev/null
    for tag in "$size" "$size-esgz" "$size-esgz-opt"; do
      "$SLIPWAY" inspect "${PLAIN[@]}" "$REGISTRY/$REPO:$tag" | sed -n '/^Layers/,$p' | sed "s|^|  $tag: |" >&2
    done
    built "$REPO" "$size-esgz-opt"
  else
    log "$ref: already in the registry (--force to rebuild)"
  fi
done
rm -rf "$BUILD_STORE" "$WORK/record-store" "$WORK/layout" "$app"
log "done: images in $REGISTRY/$PATCH_REPO and $REGISTRY/$REPO (storage $WORK/registry)"
