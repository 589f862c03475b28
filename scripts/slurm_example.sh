#!/usr/bin/env bash
# An Optuna study of iALS on Yambda-500M where every trial is a SLURM GPU job, then the best settings retrained over
# 3 seeds as SLURM jobs, then the report. Submit this script itself as a small CPU job (it only waits and tells the
# study the trials' results); it can also run on a login node inside tmux:
#   sbatch scripts/slurm_example.sh
# Edit the partition, account and environment lines for your cluster. Parallel trials: hydra.sweeper.n_jobs trials
# are in flight at once; several copies of this script with the same storage share one study. A killed script
# resumes when submitted again (the study is the journal file in its folder).
#SBATCH --job-name=yambda-tune
#SBATCH --cpus-per-task=2
#SBATCH --mem=8G
#SBATCH --time=3-00:00:00
#SBATCH --output=outputs/slurm-%j.out
set -euo pipefail

PARTITION=${PARTITION:-gpu}          # the partition of the trial jobs
DATA=${DATA:-yambda_500m}
OUT=${OUT:-outputs/tuned/${DATA}-listen_plus/ials}
export YAMBDA_DATA_DIR=${YAMBDA_DATA_DIR:-$PWD/data}   # on a file system every node sees
# the trial jobs run this environment's Python: activate it here (hydra.launcher.setup runs lines in each job too)
# source ~/venvs/yambda/bin/activate

# one GPU per trial; for DDP inside a trial: trainer=ddp trainer.devices=4 hydra.launcher.gpus_per_node=4
# hydra.launcher.tasks_per_node=4 (one task per GPU, Lightning reads SLURM's ranks)
python -m yambda_dl.tune ials --trials 50 --seeds 3 --dir "$OUT" \
  data="$DATA" trainer=gpu progress=false \
  hydra/launcher=slurm hydra.launcher.partition="$PARTITION" hydra.launcher.timeout_min=720 \
  hydra.sweeper.n_jobs=8
