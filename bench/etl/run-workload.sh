#!/usr/bin/env bash
# Run the ETL worker (/app/etl.py) of the image whose root filesystem is ROOT (a lazy mount or an unpacked
# directory), with its checkpoint files going to the host directory OUTDIR.
#
#   bench/etl/run-workload.sh ROOT OUTDIR
#
# ROOT may be read-only (a slipway mount), so OUTDIR is bind-mounted over the image's empty /out, in a
# private mount namespace: the bind disappears when the worker exits, and never keeps ROOT busy (so
# `slipway umount ROOT` works right after). Root only.
set -euo pipefail
ROOT=$1 OUTDIR=$2
mkdir -p "$OUTDIR"
exec unshare -m --propagation private /bin/sh -ec '
  mount --bind "$2" "$1/out"
  exec chroot "$1" /usr/bin/env -i PATH=/usr/bin:/bin HOME=/ LANG=C.UTF-8 PYTHONDONTWRITEBYTECODE=1 \
    /usr/bin/python3 /app/etl.py /out
' sh "$(realpath "$ROOT")" "$(realpath "$OUTDIR")"
