"""`yambda-report DIR...`: collect finished runs into one table in the paper's layout (Markdown, CSV or JSON).

Columns: NDCG@10, NDCG@100, Recall@10, Recall@100, Coverage@10, Coverage@100 (paper-compatible NDCG and Recall,
docs/protocol.md); CSV and JSON carry every metric. On real Yambda data the paper's figures stand beside ours.
Runs of one model that differ only by seed are one row, their mean and standard deviation (the paper reports iALS
and BPR as the mean of 3 seeds); runs that differ in the model's settings (a sweep) get one row each, labelled by
the settings that differ, and the best row of each model is marked. Folders whose files do not belong to one ended
run (yambda_dl.utils.rundir.read_run) are skipped and named on stderr.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from itertools import groupby
from pathlib import Path
from typing import Any

import polars as pl

from yambda_dl.data.schema import RELEASE_SIZES
from yambda_dl.paper import REPORT_COLUMNS, paper_result
from yambda_dl.utils.rundir import METRICS_FILE, RUN_FILE, StaleRun, read_run

log = logging.getLogger(__name__)

HEADERS = ("NDCG@10", "NDCG@100", "Recall@10", "Recall@100", "Coverage@10", "Coverage@100")
# the order of the paper's tables; models it does not list come after, by name
# the paper's eight baselines, in its tables' order, then the models it did not run
PAPER_MODELS = ("random", "mostpop", "decaypop", "itemknn", "ials", "bpr", "sansa", "sasrec")
MODEL_ORDER = (*PAPER_MODELS, "esasrec", "bert4rec", "gru4rec", "hstu", "audio_knn")
FORMATS = ("markdown", "csv", "json")
# the tune-mode sweeps' objective (the validation callback's val/ndcg@100): which row of a model is the best
DEFAULT_BEST_BY = "ndcg@100"
TABLE_KEYS = ("data", "size", "setup", "mode")
# the parts of a run's config that can change its numbers, besides the data, setup and mode that head each table
SETTINGS = ("model", "eval", "trainer")
# settings that never change a run's numbers: seeds (what averaging is over) and where a resumed run restarts
IGNORED_SETTINGS = ("seed", "ckpt_path")


# --- reading run folders ------------------------------------------------------------------------------------


def collect_runs(dirs: Iterable[Path]) -> tuple[list[dict[str, Any]], list[str]]:
    """(runs, skipped): every ended run folder under the given folders (searched recursively), metrics.json's dict
    with its settings; and one reason per folder that read_run rejects (unfinished, failed, mixed files)."""
    runs, skipped = [], []
    for folder in dirs:
        folder = Path(folder)
        if not folder.exists():
            raise FileNotFoundError(f"{folder}: no such folder")
        if folder.is_file():  # a run's metrics.json or run.json given directly
            candidates = [folder.parent]
        else:
            found = {path.parent for name in (METRICS_FILE, RUN_FILE) for path in folder.rglob(name)}
            candidates = sorted(found)
        for run_dir in candidates:
            try:
                files = read_run(run_dir)
            except StaleRun as reason:
                skipped.append(str(reason))
                continue
            settings = _run_settings(files["config"])
            runs.append(files["metrics"] | {"_path": str(run_dir), "_settings": settings})
    return runs, skipped


def collect(dirs: Iterable[Path]) -> list[dict[str, Any]]:
    """The ended runs under the given folders; skipped folders are logged (yambda-report prints them)."""
    runs, skipped = collect_runs(dirs)
    for reason in skipped:
        log.warning("skipped %s", reason)
    return runs


def _run_settings(config: Any) -> dict[str, str]:
    """The run's model.*, eval.* and trainer.* settings, flattened, seeds left out (they are what averaging is
    over); {} where the config holds none."""
    if not isinstance(config, dict):
        return {}

    def flat(node: Any, prefix: str) -> dict[str, str]:
        if isinstance(node, dict):
            return {k: v for key, value in node.items() for k, v in flat(value, f"{prefix}{key}.").items()}
        return {prefix[:-1]: node if isinstance(node, str) else json.dumps(node)}

    settings = {}
    for part in SETTINGS:
        node = config.get(part)
        if isinstance(node, dict):
            settings |= flat(node, f"{part}.")
    return {key: value for key, value in settings.items() if key.rsplit(".", 1)[-1] not in IGNORED_SETTINGS}


# --- the rows -----------------------------------------------------------------------------------------------


def _sort_key(run: dict[str, Any]) -> tuple:
    model = run["model"]
    rank = MODEL_ORDER.index(model) if model in MODEL_ORDER else len(MODEL_ORDER)
    return run["data"], run["setup"], run["mode"], rank, model


def _labelled(runs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """One model's runs in display order, each with its row label: equal settings share a label (they are
    averaged), differing settings are named; numbers in numeric order (hours=2.0 before hours=12.0)."""
    varying = sorted(
        {key for run in runs for key in run["_settings"] if len({r["_settings"].get(key) for r in runs}) > 1}
    )

    def label_of(run: dict[str, Any]) -> str:
        if not run["_settings"] and len(runs) > 1:  # settings unknown: never averaged
            return f"{run['model']} ({Path(run['_path']).name})"
        return " ".join([run["model"], *(f"{key.split('.', 1)[1]}={run['_settings'].get(key)}" for key in varying)])

    def order_of(run: dict[str, Any]) -> tuple:
        values = [run["_settings"].get(key, "") for key in varying]
        return (*((0, float(v), "") if _is_number(v) else (1, 0.0, v) for v in values), run["_path"])

    return [run | {"_label": label_of(run)} for run in sorted(runs, key=order_of)]


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def report_rows(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY) -> pl.DataFrame:
    """One row per table row, in display order: the table's keys, model, label, source ("runs" | "paper"),
    runs (how many were averaged), best, refused, then each metric's mean and `<metric>_std` (null for one run).

    A row's metrics are those every one of its runs has; a row with a refused run is refused. `best` marks the row
    of each model with the highest `best_by` in its table (paper rows never).
    """
    runs = [{"_settings": {}, "_path": ""} | run for run in runs]
    ordered = []
    for _, model_runs in groupby(sorted(runs, key=_sort_key), key=_sort_key):
        ordered += _labelled(list(model_runs))
    names = list(dict.fromkeys(name for run in runs for name in (run.get("metrics") or {})))
    keys = [*TABLE_KEYS, "model", "label"]
    frame = pl.DataFrame(
        [
            {
                **{key: run[key] for key in TABLE_KEYS},
                "model": run["model"],
                "label": run["_label"],
                "refused": run.get("refused"),
                **{name: _float((run.get("metrics") or {}).get(name)) for name in names},
            }
            for run in ordered
        ],
        schema={
            **dict.fromkeys(keys, pl.String),
            "refused": pl.String,
            **dict.fromkeys(names, pl.Float64),
        },
    )
    complete = [pl.col(name).null_count() == 0 for name in names]  # a metric every run of the row has
    rows = frame.group_by(keys, maintain_order=True).agg(
        pl.len().alias("runs"),
        pl.col("refused").drop_nulls().first(),
        *[pl.when(ok).then(pl.col(name).mean()).alias(name) for ok, name in zip(complete, names, strict=True)],
        *[pl.when(ok).then(pl.col(name).std()).alias(f"{name}_std") for ok, name in zip(complete, names, strict=True)],
    )
    scored = pl.col("refused").is_null()
    if best_by in names:
        top = pl.when(scored).then(pl.col(best_by)).max().over([*TABLE_KEYS, "model"])
        best = (scored & (pl.col(best_by) == top)).fill_null(False)
    else:
        best = pl.lit(False)
    rows = rows.with_columns(source=pl.lit("runs"), best=best)
    rows = rows.select([*keys, "source", "runs", "best", "refused", *names, *(f"{name}_std" for name in names)])
    return _with_paper_rows(rows, names)


def _float(value: Any) -> float | None:
    return None if value is None else float(value)


def _with_paper_rows(rows: pl.DataFrame, names: list[str]) -> pl.DataFrame:
    """Insert the paper's figures under each model's last row, where the paper reports that model on that data."""
    pieces, keys = [], [*TABLE_KEYS, "model"]
    for _, model_rows in rows.group_by(keys, maintain_order=True):
        pieces.append(model_rows)
        first = model_rows.row(0, named=True)
        paper = paper_result(first["size"], first["setup"], first["model"])
        if first["size"] in RELEASE_SIZES and first["mode"] == "final" and paper is not None:
            row = {key: first[key] for key in keys} | {"label": "paper", "source": "paper", "runs": 0, "best": False}
            pieces.append(pl.DataFrame([row | paper]).cast({name: pl.Float64 for name in paper}))
    return pl.concat(pieces, how="diagonal_relaxed").select(rows.columns) if pieces else rows


# --- the formats --------------------------------------------------------------------------------------------


def _cell(row: dict[str, Any], name: str) -> str:
    mean, std = row.get(name), row.get(f"{name}_std")
    if mean is None:
        return ""
    return f"{mean:.4f} ± {std:.4f}" if row["runs"] > 1 and std is not None else f"{mean:.4f}"


def markdown_table(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY) -> str:
    """One table per (data, setup, mode); a `paper` row under each model where the paper has figures.

    Rows averaged over seeds show mean ± std; the best row of a model with several (a sweep) is in bold. A run
    that a model refused (metrics.json's `refused`, written under continue_on_refusal) shows as `refused`, its
    reason under the table."""
    if not runs:
        return "no metrics.json found"
    rows = report_rows(runs, best_by)
    lines: list[str] = []
    for (data, _, setup, mode), table in rows.group_by(list(TABLE_KEYS), maintain_order=True):
        lines += [
            "",
            f"### {data} · {setup} · {mode}",
            "",
            "| model | " + " | ".join(HEADERS) + " |",
            "|---" * (len(HEADERS) + 1) + "|",
        ]
        notes, marked = [], False
        for _, model_rows in table.group_by("model", maintain_order=True):
            scored = model_rows.filter((pl.col("source") == "runs") & pl.col("refused").is_null())
            # bold only where it tells something: several rows, not all of them tied for the best
            show_best = scored.height > 1 and not scored.get_column("best").all()
            for row in model_rows.iter_rows(named=True):
                label = row["label"] + (f" (mean ± std of {row['runs']} runs)" if row["runs"] > 1 else "")
                if row["source"] == "paper":
                    lines.append("| ↳ paper | " + " | ".join(_cell(row, c) for c in REPORT_COLUMNS) + " |")
                elif row["refused"] is not None:
                    lines.append(f"| {label} | refused (below) |" + " |" * (len(HEADERS) - 1))
                    notes.append(f"\n{label} refused: {row['refused']}")
                else:
                    if row["best"] and show_best:
                        label, marked = f"**{label}**", True
                    lines.append(f"| {label} | " + " | ".join(_cell(row, c) for c in REPORT_COLUMNS) + " |")
        if marked:
            lines += ["", f"Bold: the best row of a model by {best_by}."]
        lines += notes
    return "\n".join(lines).strip() + "\n"


def csv_table(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY) -> str:
    """Every row and every metric (mean, then `<metric>_std`) as CSV, one header line."""
    return report_rows(runs, best_by).write_csv() if runs else ""


def json_table(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY) -> str:
    """Every row as a JSON object (the CSV's columns), in a list."""
    return json.dumps(report_rows(runs, best_by).to_dicts() if runs else [], indent=2) + "\n"


RENDERERS = {"markdown": markdown_table, "csv": csv_table, "json": json_table}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yambda-report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders (searched recursively)")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default markdown)")
    parser.add_argument("--best-by", help=f"the metric that picks a model's best row (default {DEFAULT_BEST_BY})")
    args = parser.parse_args(argv)
    try:
        runs, skipped = collect_runs(args.dirs)
        for reason in skipped:
            print(f"yambda-report: skipped {reason}", file=sys.stderr)
        known = {name for run in runs for name in (run.get("metrics") or {})}
        if args.best_by is not None and runs and args.best_by not in known:  # the default may be absent: no mark
            valid = ", ".join(sorted(known))
            raise ValueError(f"--best-by {args.best_by!r} is not a metric of these runs; valid choices: {valid}")
        text = RENDERERS[args.format](runs, args.best_by or DEFAULT_BEST_BY)
        print(text, end="" if text.endswith("\n") else "\n")
    except (FileNotFoundError, KeyError, ValueError) as err:  # ValueError: also unreadable JSON
        print(f"yambda-report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
