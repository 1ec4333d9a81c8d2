#!/usr/bin/env bash
# Benchmark: `slipway pull` + `slipway unpack` against `skopeo copy` + `umoci unpack`, and against GNU
# `tar -xzf` of the same layer blobs from local files, on a generated ~300 MB image served by Debian's
# docker-registry on loopback. All variants run in the same session, several times each (hyperfine), with
# fresh stores and target directories before every run. Results: $OUT/results.json, summary.md.
#
#   bench/pull-unpack.sh                # RUNS=5 SIZE_MB=300 OUT=bench-results/pull-unpack
set -euo pipefail
cd "$(dirname "$0")/.."
RUNS=${RUNS:-5}
SIZE_MB=${SIZE_MB:-300}
OUT=${OUT:-bench-results/pull-unpack}
need=()
for tool in docker-registry skopeo umoci hyperfine python3 tar; do command -v "$tool" >/dev/null || need+=("$tool"); done
if ((${#need[@]})); then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker-registry skopeo umoci hyperfine >/dev/null
fi
swift build -c release --product slipway >/dev/null
SLIPWAY="$(swift build -c release --show-bin-path)/slipway"

WORK=$(mktemp -d /var/tmp/slipway-bench.XXXXXX)
trap 'kill $REGISTRY_PID 2>/dev/null || true; rm -rf "$WORK"' EXIT
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
cat >"$WORK/registry.yml" <<YAML
version: 0.1
storage: {filesystem: {rootdirectory: $WORK/registry}}
http: {addr: 127.0.0.1:$PORT}
log: {level: error}
YAML
docker-registry serve "$WORK/registry.yml" >"$WORK/registry.log" 2>&1 &
REGISTRY_PID=$!
for _ in $(seq 50); do curl -fs "http://127.0.0.1:$PORT/v2/" >/dev/null && break; sleep 0.1; done

echo "generating a ${SIZE_MB} MB tree and its image"
python3 bench/generate_tree.py "$WORK/tree" "$SIZE_MB"
layers=()
for part in base libs app data; do
  tar --sort=name --owner=0 --group=0 --numeric-owner --mtime=@1767225600 -C "$WORK/tree/$part" -cf "$WORK/$part.tar" .
  layers+=(--layer "$WORK/$part.tar")
done
rm -rf "$WORK/tree"
"$SLIPWAY" assemble "oci:$WORK/layout:bench" "${layers[@]}" >/dev/null
REF="127.0.0.1:$PORT/bench:v1"
"$SLIPWAY" copy -q "oci:$WORK/layout:bench" "$REF" >/dev/null
rm -f "$WORK"/*.tar
LAYER_FILES=$("$SLIPWAY" inspect --json "oci:$WORK/layout:bench" | python3 -c '
import json,sys; d=json.load(sys.stdin)
print(" ".join(sys.argv[1] + "/blobs/sha256/" + l["digest"].split(":")[1] for l in d["layers"]))' "$WORK/layout")
"$SLIPWAY" inspect "$REF" | sed -n '/Layers/,$p'

# Every run starts from a cold page cache, dentry and inode cache: on ext4 here, extracting over the
# remains of a just-deleted tree cost up to 5x more kernel time and made every tool's figures swing
# 1.2-6 s. Dropping caches (root only) makes runs repeatable; it also means each run reads the registry's
# blobs from disk, like a node that did not just push the image.
COLD="sync; if [ -w /proc/sys/vm/drop_caches ]; then echo 3 > /proc/sys/vm/drop_caches; fi"
mkdir -p "$OUT"
hyperfine --runs "$RUNS" --warmup 1 --export-json "$OUT/results.json" \
  -n "slipway unpack (pull overlapped)" \
  --prepare "rm -rf $WORK/s $WORK/rootfs; $COLD" \
  "$SLIPWAY unpack -q --store $WORK/s $REF $WORK/rootfs" \
  -n "slipway pull + slipway unpack" \
  --prepare "rm -rf $WORK/s $WORK/rootfs; $COLD" \
  "$SLIPWAY pull -q --store $WORK/s $REF >/dev/null && $SLIPWAY unpack -q --store $WORK/s $REF $WORK/rootfs" \
  -n "skopeo copy + umoci unpack" \
  --prepare "rm -rf $WORK/sk $WORK/bundle; $COLD" \
  "skopeo copy -q --src-tls-verify=false docker://$REF oci:$WORK/sk:bench && umoci unpack --image $WORK/sk:bench $WORK/bundle" \
  -n "GNU tar -xzf of the local layer files" \
  --prepare "rm -rf $WORK/tarout && mkdir $WORK/tarout; $COLD" \
  "for f in $LAYER_FILES; do tar -xzf \$f -C $WORK/tarout; done"

python3 - "$OUT" "$SIZE_MB" <<'PY'
import json, sys, platform, os
out, size = sys.argv[1], sys.argv[2]
results = json.load(open(f"{out}/results.json"))["results"]
by = {r["command"]: r for r in results}
slip = by["slipway pull + slipway unpack"]["mean"]
lines = [f"# pull + unpack, {size} MB generated image, docker-registry on loopback", "",
         f"{os.cpu_count()} cores, {platform.platform()}; {len(results[0]['times'])} runs each after one warm-up;",
         "page, dentry and inode caches dropped before every run (cold node).", "",
         "| variant | mean s | stddev s | min s | slipway (pull + unpack) / variant |", "|---|---|---|---|---|"]
for r in results:
    lines.append(f"| {r['command']} | {r['mean']:.3f} | {r['stddev'] or 0:.3f} | {r['min']:.3f} | {slip / r['mean']:.3f} |")
open(f"{out}/summary.md", "w").write("\n".join(lines) + "\n")
print("\n".join(lines))
PY
