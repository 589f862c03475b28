"""Reproduce the paper's results tables (Listen+ and Like: docs/protocol.md, "Paper results") for one dataset size.

usage: python scripts/reproduce_paper_tables.py [--size 50m] [--setups listen_plus like] [--trials 50] [--seeds 3]
           [--dry-run] [OVERRIDES...]

The paper's protocol, step by step, each step a command printed before it runs:
  1. the models the paper tunes (DecayPop, ItemKNN, iALS, BPR) with Optuna on the validation day, then retrained in
     final mode with the best settings over `--seeds` seeds: `python -m yambda_dl.tune <model> ...` (a killed step
     resumes when the script is run again: the study is a file in its folder);
  2. the models it ran at fixed settings (Random, MostPop, SANSA, SASRec) in final mode: experiment=paper_baselines
     restricted to them (a model that cannot fit is recorded as refused, as in the paper);
  3. `yambda-report` over both, the paper's figures under each row, written to outputs/paper_tables/<size>-<setup>.md.
ItemKNN is skipped at 5b (the paper could not run it there either). OVERRIDES go to every yambda-train command, e.g.
trainer=gpu, or hydra/launcher=slurm hydra.launcher.partition=gpu to run every trial and seed as a SLURM job
(scripts/slurm_example.sh). On synthetic data for a try: --size small (data=synthetic_small) --trials 5 --seeds 2.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

TUNED = ("decaypop", "itemknn", "ials", "bpr")
FIXED = ("random", "mostpop", "sansa", "sasrec")


def data_config(size: str) -> str:
    """The data= choice of a size: yambda_50m|500m|5b, or synthetic_tiny|small for a dry try."""
    return f"synthetic_{size}" if size in ("tiny", "small") else f"yambda_{size}"


def commands(size: str, setups: list[str], trials: int, seeds: int, overrides: list[str]) -> list[list[str]]:
    """Every command of the reproduction, in order."""
    python = sys.executable
    data = data_config(size)
    seed_list = ",".join(str(42 + i) for i in range(seeds))
    out: list[list[str]] = []
    for setup in setups:
        common = [f"data={data}", f"protocol={setup}", *overrides]
        base = Path("outputs") / "tuned" / f"{data}-{setup}"
        for model in TUNED:
            if model == "itemknn" and size == "5b":
                continue
            tune = [python, "-m", "yambda_dl.tune", model, "--trials", str(trials), "--seeds", str(seeds)]
            out.append([*tune, "--dir", str(base / model), *common])
        fixed = Path("outputs") / "paper_tables" / f"{data}-{setup}-fixed"
        models = f"hydra.sweeper.params.model='{','.join(FIXED)}'"  # quoted: one value, not a sweep of sweeps
        train = [python, "-m", "yambda_dl.train", "experiment=paper_baselines", models]
        out.append([*train, f"seed={seed_list}", f"hydra.sweep.dir={fixed}", *common])
        report = Path("outputs") / "paper_tables" / f"{data}-{setup}.md"
        out.append([python, "-m", "yambda_dl.report", *(str(base / m / "final") for m in TUNED), str(fixed),
                    f"--output={report}"])  # fmt: skip
    return out


def run(command: list[str]) -> None:
    """Run one step; the report step writes its table to the file named by --output (yambda-report prints it)."""
    output = next((c.split("=", 1)[1] for c in command if c.startswith("--output=")), None)
    command = [c for c in command if not c.startswith("--output=")]
    if output is None:
        subprocess.run(command, check=True)
        return
    folders = [c for c in command[3:] if Path(c).exists()]  # a tuned model skipped at this size has no folder
    done = subprocess.run([*command[:3], *folders], check=True, capture_output=True, text=True)
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    Path(output).write_text(done.stdout)
    print(done.stdout, end="")
    print(f"-> {output}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", default="50m", help="50m | 500m | 5b (Yambda), tiny | small (synthetic)")
    parser.add_argument("--setups", nargs="+", default=["listen_plus", "like"], choices=["listen_plus", "like"])
    parser.add_argument("--trials", type=int, default=50, help="Optuna trials per tuned model (default 50)")
    parser.add_argument("--seeds", type=int, default=3, help="final runs per model (the paper: 3)")
    parser.add_argument("--dry-run", action="store_true", help="print the commands, run nothing")
    parser.add_argument("overrides", nargs="*", help="yambda-train overrides for every step (trainer=gpu, ...)")
    args = parser.parse_intermixed_args(argv)
    if args.size not in ("50m", "500m", "5b", "tiny", "small"):
        parser.error(f"--size {args.size}: choose 50m, 500m, 5b (Yambda) or tiny, small (synthetic)")
    for command in commands(args.size, args.setups, args.trials, args.seeds, args.overrides):
        print("$", shlex.join(command), flush=True)
        if not args.dry_run:
            run(command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
