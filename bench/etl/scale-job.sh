#!/bin/bash
# One launch of the scale benchmark, submitted by bench/etl/scale_launch.py as
# `sbatch -N N --ntasks-per-node=1 scale-job.sh`: every task runs the Patch Tuesday worker in IMAGE through
# `slipway run` (which pulls what the store lacks), or with PLUGIN=1 through Slipway's SPANK plugin
# (`srun --container-image`, the store being the plugin's), then the batch step records when all tasks had ended,
# and the machine's CPU counters then.
#
# Environment (from the submitter):
#   IMAGE       the image reference (the registry host's docker-registry or the cluster's cache)
#   MODE        unpacked or lazy
#   STORE       the Slipway store; with NODE_LOCAL=1 a directory holding one store per node (STORE/nodeI),
#               standing in for each node's local disk
#   DATA        the shared data directory: data/shard-*.csv in, results/vN.task-RANK.json out
#   SLIPWAY     the slipway binary
#   SCALE_JOB   this script's path (srun runs it again as each task, with the argument "task")
set -euo pipefail
: "${IMAGE:?}" "${MODE:?}" "${STORE:?}" "${DATA:?}" "${SLIPWAY:?}" "${SCALE_JOB:?}"

if [[ ${1:-} == task ]]; then
  store=$STORE
  [[ ${NODE_LOCAL:-0} == 1 ]] && store=$STORE/$SLURMD_NODENAME
  exec "$SLIPWAY" run -q --plain-http --mode "$MODE" --store "$store" --bind "$DATA:/shared" \
    --env SLURM_PROCID --env SLURMD_NODENAME "$IMAGE"
fi

date +%s.%N >"$DATA/job-start"
if [[ ${PLUGIN:-0} == 1 ]]; then
  srun --container-image="$IMAGE" --container-mode="$MODE" --container-store="$STORE" --container-mounts="$DATA:/shared" \
    /usr/bin/python3 /app/patch_worker.py
else
  srun "$SCALE_JOB" task
fi
head -1 /proc/stat >"$DATA/job-end.stat"   # the machine's CPU counters as the job ends (sbatch --wait returns later)
date +%s.%N >"$DATA/job-end"
