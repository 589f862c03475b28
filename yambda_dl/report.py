"""`yambda-report DIR...`: collect the metrics.json files of runs into one Markdown table in the paper's layout.

Columns: NDCG@10, NDCG@100, Recall@10, Recall@100, Coverage@10, Coverage@100 (paper-compatible NDCG and Recall,
SPEC.md section 5). On real Yambda data the paper's figures stand beside ours. Runs of one model that differ only
by seed are averaged into one row, as the paper reports iALS and BPR (mean of 3 seeds); runs that differ in the
model's settings (a sweep) get one row each, labelled by the settings that differ.
"""

from __future__ import annotations

import argparse
import json
import sys
from itertools import groupby
from pathlib import Path
from typing import Any

from omegaconf import OmegaConf

from yambda_dl.data.schema import RELEASE_SIZES
from yambda_dl.paper import REPORT_COLUMNS, paper_result

HEADERS = ("NDCG@10", "NDCG@100", "Recall@10", "Recall@100", "Coverage@10", "Coverage@100")
# the order of the paper's tables; models it does not list come after, by name
MODEL_ORDER = ("random", "mostpop", "decaypop", "itemknn", "ials", "bpr", "sansa", "sasrec")


def collect(dirs: list[Path]) -> list[dict[str, Any]]:
    """Every metrics.json under the given folders (searched recursively), with its run's settings."""
    runs = []
    for folder in dirs:
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        paths = [folder] if folder.is_file() else sorted(folder.rglob("metrics.json"))
        for path in paths:
            run = json.loads(path.read_text()) | {"_path": str(path.parent)}
            runs.append(run | {"_settings": _run_settings(path.parent / "config.yaml")})
    return runs


# the parts of a run's config that can change its numbers, besides the data, setup and mode that head each table
SETTINGS = ("model", "eval", "trainer")


def _run_settings(config: Path) -> dict[str, str]:
    """The run's model.*, eval.* and trainer.* settings, flattened, seeds left out (they are what averaging is
    over); {} where the run has no config.yaml."""
    if not config.is_file():
        return {}
    resolved = OmegaConf.load(config)

    def flat(node: Any, prefix: str) -> dict[str, str]:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node if isinstance(node, str) else json.dumps(node)}

    settings = {}
    for part in SETTINGS:
        node = resolved.get(part)
        if OmegaConf.is_config(node):
            settings |= flat(OmegaConf.to_container(node, resolve=False), f"{part}.")
    return {key: value for key, value in settings.items() if key.rsplit(".", 1)[-1] != "seed"}


def _sort_key(run: dict[str, Any]) -> tuple:
    model = run["model"]
    rank = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    return run["data"], run["setup"], run["mode"], rank, model


def _cells(values: dict[str, float] | None) -> list[str]:
    if values is None:
        return ["" for _ in REPORT_COLUMNS]
    return [f"{values[c]:.4f}" if c in values else "" for c in REPORT_COLUMNS]


def _rows(runs: list[dict[str, Any]]) -> list[tuple[str, dict[str, float] | None, str | None]]:
    """(label, metrics, refusal) rows of one model's runs: equal settings averaged, differing ones labelled."""
    varying = sorted(
        {key for run in runs for key in run["_settings"] if len({r["_settings"].get(key) for r in runs}) > 1}
    )

    def label_of(run: dict[str, Any]) -> str:
        if not run["_settings"] and len(runs) > 1:  # settings unknown (no config.yaml): never averaged
            return f"{run['model']} ({Path(run['_path']).name})"
        return " ".join([run["model"], *(f"{key.split('.', 1)[1]}={run['_settings'].get(key)}" for key in varying)])

    def order_of(run: dict[str, Any]) -> tuple:  # numbers in numeric order: hours=2.0 before hours=12.0
        values = [run["_settings"].get(key, "") for key in varying]
        return (*((0, float(v), "") if _is_number(v) else (1, 0.0, v) for v in values), run["_path"])

    rows = []
    for label, same in groupby(sorted(runs, key=order_of), key=label_of):
        same = list(same)
        refused = [run["refused"] for run in same if run.get("refused")]
        if refused:
            rows.append((label, None, refused[0]))
            continue
        shared = set.intersection(*(set(run["metrics"]) for run in same))
        mean = {name: sum(run["metrics"][name] for run in same) / len(same) for name in shared}
        rows.append((label + (f" (mean of {len(same)} runs)" if len(same) > 1 else ""), mean, None))
    return rows


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def markdown_table(runs: list[dict[str, Any]]) -> str:
    """One table per (data, setup, mode); a `paper` row under each model where the paper has figures.

    A run that a model refused (metrics.json's `refused`, written under continue_on_refusal) shows as `refused`,
    its reason under the table."""
    if not runs:
        return "no metrics.json found"
    runs = [{"_settings": {}, "_path": ""} | run for run in runs]
    lines: list[str] = []
    for (data, setup, mode), group in groupby(sorted(runs, key=_sort_key), key=lambda r: _sort_key(r)[:3]):
        lines += [
            "",
            f"### {data} · {setup} · {mode}",
            "",
            "| model | " + " | ".join(HEADERS) + " |",
            "|---" * (len(HEADERS) + 1) + "|",
        ]
        notes = []
        for model, model_runs in groupby(group, key=lambda r: r["model"]):
            model_runs = list(model_runs)
            for label, metrics, refusal in _rows(model_runs):
                if refusal is not None:
                    lines.append(f"| {label} | refused (below) |" + " |" * (len(HEADERS) - 1))
                    notes.append(f"\n{label} refused: {refusal}")
                else:
                    lines.append(f"| {label} | " + " | ".join(_cells(metrics)) + " |")
            size = model_runs[0]["size"]
            if size in RELEASE_SIZES and mode == "final":
                paper = paper_result(size, setup, model)
                if paper is not None:
                    lines.append("| ↳ paper | " + " | ".join(_cells(paper)) + " |")
        lines += notes
    return "\n".join(lines).strip() + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yambda-report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders holding metrics.json files")
    args = parser.parse_args(argv)
    try:
        print(markdown_table(collect(args.dirs)))
    except (FileNotFoundError, KeyError, json.JSONDecodeError) as err:
        print(f"yambda-report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
