"""`yambda-report DIR...`: collect finished runs into one table in the paper's layout (Markdown, CSV or JSON).

Columns: NDCG@10, NDCG@100, Recall@10, Recall@100, Coverage@10, Coverage@100 (paper-compatible NDCG and Recall,
docs/protocol.md); CSV and JSON carry every metric. On real Yambda data the paper's figures stand beside ours.
Runs of one model that differ only by seed are one row, their mean and standard deviation (the paper reports iALS
and BPR as the mean of 3 seeds); runs that differ in the model's settings (a sweep) get one row each, labelled by
the settings that differ, and the best row of each model is marked. Folders whose files do not belong to one ended
run (yambda_dl.utils.rundir.read_run) are skipped and named on stderr.

`--slice NAME` reports a target slice instead of all targets (metrics.json's `organic`, `recommended`, `warm`,
`cold`: eval/slices.py), or the streaming evaluation (`stream`), in the same layout; the paper has no figures for them.
`--compare all,stream` puts slices side by side instead: one row per model (labelled and averaged as above), one
column per (metric, slice) for a few metrics (`--metrics`, default paper NDCG@10 and Recall@100), '-' where a run
lacks the slice; the README's frozen vs streaming, organic vs recommended and warm vs cold tables.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable, Sequence
from itertools import groupby
from pathlib import Path
from typing import Any

import polars as pl

from yambda_dl.data.schema import RELEASE_SIZES
from yambda_dl.eval.slices import TARGET_SLICES
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
ALL_TARGETS = "all"  # metrics.json's "metrics": every target, as the paper evaluates
# what --slice may name: a target slice's flat metrics, or the streaming evaluation's {"metrics": {...}, ...};
# stream_frozen: the frozen lists scored on the stream's (user, window) pairs (its "frozen"), the fair comparison
SLICES = (ALL_TARGETS, *TARGET_SLICES, "stream", "stream_frozen")
STREAM_PARTS = {"stream": "metrics", "stream_frozen": "frozen"}
# --compare's default columns: the paper's headline metrics, NDCG@10 and Recall@100 (paper-compatible)
DEFAULT_COMPARE_METRICS = ("paper_ndcg@10", "paper_recall@100")
# the headers of the paper-compatible metrics and coverage; any other metric is headed by its metrics.json name
HEADER_NAMES = {"paper_ndcg": "NDCG", "paper_recall": "Recall", "coverage": "Coverage"}


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


def select_slice(runs: list[dict[str, Any]], name: str = ALL_TARGETS) -> list[dict[str, Any]]:
    """The runs with `metrics` replaced by the slice's metrics (None where the slice had no target or the run did not
    compute it); `all` leaves them as they are."""
    if name not in SLICES:
        raise ValueError(f"--slice {name!r} is not a slice; valid choices: {', '.join(SLICES)}")
    if name == ALL_TARGETS:
        return runs
    out = []
    for run in runs:
        value = run.get("stream" if name in STREAM_PARTS else name)
        if name in STREAM_PARTS and isinstance(value, dict):  # the streaming result's sub-dict
            value = value.get(STREAM_PARTS[name])
        out.append(run | {"metrics": value if isinstance(value, dict) else None, "_slice": name})
    return out


def holds_slice(run: dict[str, Any], name: str) -> bool:
    """Whether the run computed the slice: a target slice's key (null: no target in it), a non-null "stream"
    (yambda-train writes null there when eval.stream.window is unset)."""
    if name in STREAM_PARTS:
        return run.get("stream") is not None
    return name == ALL_TARGETS or (name in run and (run[name] is not None or name in TARGET_SLICES))


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

    # a part swapped for another (model/item_repr=hybrid vs content) is named by its class alone, not by every key
    # the two classes do not share
    swapped = sorted(key.removesuffix("._target_") for key in varying if key.endswith("._target_"))
    named = [key for key in varying if not any(key.startswith(f"{part}.") for part in swapped)]

    def label_of(run: dict[str, Any]) -> str:
        if not run["_settings"] and len(runs) > 1:  # settings unknown: never averaged
            return f"{run['model']} ({Path(run['_path']).name})"
        settings = run["_settings"]
        parts = [
            f"{part.split('.', 1)[1]}={str(settings.get(f'{part}._target_')).rsplit('.', 1)[-1]}" for part in swapped
        ]
        return " ".join([run["model"], *parts, *(f"{key.split('.', 1)[1]}={settings.get(key)}" for key in named)])

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


def report_rows(
    runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY, slice_name: str = ALL_TARGETS
) -> pl.DataFrame:
    """One row per table row, in display order: the table's keys, model, label, source ("runs" | "paper"),
    runs (how many were averaged), best, refused, then each metric's mean and `<metric>_std` (null for one run).

    A row's metrics are those every one of its runs has; a row with a refused run is refused. `best` marks the row
    of each model with the highest `best_by` in its table (paper rows never). With a slice other than `all`, the
    metrics are the slice's (select_slice), a `slice` column follows `mode`, and there are no paper rows.
    """
    runs = [{"_settings": {}, "_path": ""} | run for run in select_slice(runs, slice_name)]
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
    if slice_name != ALL_TARGETS:
        return rows.insert_column(len(TABLE_KEYS), pl.lit(slice_name).alias("slice"))
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


def table_head(heading: str, headers: Sequence[str]) -> list[str]:
    """The lines that open a markdown table: a blank line, its ### heading, the header row (model, then `headers`)."""
    return ["", f"### {heading}", "", "| model | " + " | ".join(headers) + " |", "|---" * (len(headers) + 1) + "|"]


def markdown_table(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY, slice_name: str = ALL_TARGETS) -> str:
    """One table per (data, setup, mode); a `paper` row under each model where the paper has figures.

    Rows averaged over seeds show mean ± std; the best row of a model with several (a sweep) is in bold. A run
    that a model refused (metrics.json's `refused`, written under continue_on_refusal) shows as `refused`, its
    reason under the table. With a slice, the tables are the slice's (their titles name it); a run without it
    (no target in the slice, or written before slices existed) shows empty cells."""
    if not runs:
        return "no metrics.json found"
    rows = report_rows(runs, best_by, slice_name)
    title = {ALL_TARGETS: "", "stream": " · stream", "stream_frozen": " · frozen on the stream's pairs"}.get(
        slice_name, f" · {slice_name} targets"
    )
    lines: list[str] = []
    for (data, _, setup, mode), table in rows.group_by(list(TABLE_KEYS), maintain_order=True):
        lines += table_head(f"{data} · {setup} · {mode}{title}", HEADERS)
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


def csv_table(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY, slice_name: str = ALL_TARGETS) -> str:
    """Every row and every metric (mean, then `<metric>_std`) as CSV, one header line."""
    return report_rows(runs, best_by, slice_name).write_csv() if runs else ""


def json_table(runs: list[dict[str, Any]], best_by: str = DEFAULT_BEST_BY, slice_name: str = ALL_TARGETS) -> str:
    """Every row as a JSON object (the CSV's columns), in a list."""
    return json.dumps(report_rows(runs, best_by, slice_name).to_dicts() if runs else [], indent=2) + "\n"


# --- slices side by side (--compare) -------------------------------------------------------------------------


def parse_list(text: str, flag: str, choices: Iterable[str] | None = None) -> tuple[str, ...]:
    """A comma-separated flag value as a tuple: each name once, each among `choices` when given."""
    names = tuple(name.strip() for name in text.split(",") if name.strip())
    if not names:
        raise ValueError(f"{flag} {text!r}: give comma-separated names, e.g. {flag} all,stream")
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ValueError(f"{flag} {text!r} names {', '.join(repeated)} more than once")
    if choices is not None:
        choices = tuple(choices)
        for name in names:
            if name not in choices:
                raise ValueError(f"{flag} {name!r} is not a slice; valid choices: {', '.join(choices)}")
    return names


def compare_column(slice_name: str, metric: str) -> str:
    """A (slice, metric) mean's column in compare_rows, as metrics.json nests them: `stream/paper_ndcg@10`."""
    return f"{slice_name}/{metric}"


def compare_rows(
    runs: list[dict[str, Any]], slices: Iterable[str], metrics: Iterable[str] = DEFAULT_COMPARE_METRICS
) -> pl.DataFrame:
    """One row per model row of report_rows (same labels, same seed averaging), then for each metric and each slice
    its mean `<slice>/<metric>` and `<slice>/<metric>_std` (null where a run of the row lacks the slice)."""
    slices, metrics = list(slices), list(metrics)
    keys = [*TABLE_KEYS, "model", "label"]
    frame = None
    for slice_name in slices:
        rows = report_rows(runs, slice_name=slice_name).filter(pl.col("source") == "runs")
        columns = {}
        for metric in metrics:
            for suffix in ("", "_std"):
                name = compare_column(slice_name, metric) + suffix
                present = f"{metric}{suffix}" in rows.columns  # absent: no run has this metric in this slice
                columns[name] = (pl.col(f"{metric}{suffix}") if present else pl.lit(None)).cast(pl.Float64)
        rows = rows.select(*keys, "runs", "refused", **columns)
        if frame is None:
            frame = rows
        else:  # every slice groups and labels the same runs alike (select_slice only swaps their metrics)
            assert rows.select(keys).equals(frame.select(keys)), "slices grouped the runs differently"
            frame = frame.hstack(rows.drop(*keys, "runs", "refused"))
    order = [f"{compare_column(s, m)}{suffix}" for suffix in ("", "_std") for m in metrics for s in slices]
    return frame.select(*keys, "runs", "refused", *order)


def compare_header(metric: str) -> str:
    """The paper's name for a paper-compatible metric or coverage (NDCG@10), else metrics.json's (ndcg@10)."""
    name, _, k = metric.partition("@")
    return f"{HEADER_NAMES[name]}@{k}" if name in HEADER_NAMES and k else metric


def compare_markdown(
    runs: list[dict[str, Any]], slices: Iterable[str], metrics: Iterable[str] = DEFAULT_COMPARE_METRICS
) -> str:
    """One table per (data, setup, mode): a row per model row, a column per (metric, slice), mean ± std over seeds,
    '-' where a run of the row lacks the slice (or the metric); a refused row says so, its reason below."""
    if not runs:
        return "no metrics.json found"
    slices, metrics = list(slices), list(metrics)
    rows = compare_rows(runs, slices, metrics)
    pairs = [(metric, slice_name) for metric in metrics for slice_name in slices]
    headers = [f"{compare_header(metric)} {slice_name}" for metric, slice_name in pairs]
    lines: list[str] = []
    for (data, _, setup, mode), table in rows.group_by(list(TABLE_KEYS), maintain_order=True):
        lines += table_head(f"{data} · {setup} · {mode} · {' vs '.join(slices)}", headers)
        notes = []
        for row in table.iter_rows(named=True):
            label = row["label"] + (f" (mean ± std of {row['runs']} runs)" if row["runs"] > 1 else "")
            if row["refused"] is not None:
                lines.append(f"| {label} | refused (below) |" + " |" * (len(headers) - 1))
                notes.append(f"\n{label} refused: {row['refused']}")
                continue
            cells = [_cell(row, compare_column(slice_name, metric)) or "-" for metric, slice_name in pairs]
            lines.append(f"| {label} | " + " | ".join(cells) + " |")
        lines += notes
    return "\n".join(lines).strip() + "\n"


def compare_csv(
    runs: list[dict[str, Any]], slices: Iterable[str], metrics: Iterable[str] = DEFAULT_COMPARE_METRICS
) -> str:
    """compare_rows as CSV, one header line."""
    return compare_rows(runs, slices, metrics).write_csv() if runs else ""


def compare_json(
    runs: list[dict[str, Any]], slices: Iterable[str], metrics: Iterable[str] = DEFAULT_COMPARE_METRICS
) -> str:
    """compare_rows as a list of JSON objects."""
    return json.dumps(compare_rows(runs, slices, metrics).to_dicts() if runs else [], indent=2) + "\n"


def check_compare(runs: list[dict[str, Any]], slices: Iterable[str], metrics: Iterable[str], where: str) -> None:
    """Before any table: every compared slice held by some run, every metric in some run's compared slices."""
    slices = list(slices)
    for slice_name in slices:
        if runs and not any(holds_slice(run, slice_name) for run in runs):
            raise ValueError(
                f"--compare {slice_name!r}: no run under {where} holds it (runs from before the slices, or without "
                f"the streaming evaluation); valid choices: {', '.join(SLICES)}"
            )
    known = {
        name for slice_name in slices for run in select_slice(runs, slice_name) for name in (run.get("metrics") or {})
    }
    for metric in metrics:
        if runs and metric not in known:
            raise ValueError(
                f"--metrics {metric!r} is not a metric of these runs' {', '.join(slices)} slices; valid choices: "
                f"{', '.join(sorted(known))}"
            )


RENDERERS = {"markdown": markdown_table, "csv": csv_table, "json": json_table}
COMPARE_RENDERERS = {"markdown": compare_markdown, "csv": compare_csv, "json": compare_json}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="yambda-report", description=__doc__.splitlines()[0])
    parser.add_argument("dirs", nargs="+", type=Path, help="run or sweep folders (searched recursively)")
    parser.add_argument("--format", choices=FORMATS, default="markdown", help="output format (default markdown)")
    parser.add_argument("--best-by", help=f"the metric that picks a model's best row (default {DEFAULT_BEST_BY})")
    parser.add_argument(
        "--slice",
        default=ALL_TARGETS,
        metavar="NAME",
        help=f"report a target slice or the streaming evaluation instead of all targets: {', '.join(SLICES)} "
        f"(default {ALL_TARGETS})",
    )
    parser.add_argument(
        "--compare",
        metavar="A,B[,...]",
        help=f"slices side by side, a column per (metric, slice), one row per model: among {', '.join(SLICES)}, "
        "e.g. all,stream or organic,recommended",
    )
    parser.add_argument(
        "--metrics",
        metavar="M1,M2[,...]",
        help=f"--compare's metrics, as metrics.json names them (default {','.join(DEFAULT_COMPARE_METRICS)})",
    )
    args = parser.parse_args(argv)
    try:
        compare = metrics = None
        if args.compare is not None:  # flags checked before any folder is read
            if args.slice != ALL_TARGETS or args.best_by is not None:
                raise ValueError("--compare lays out its own slices, unmarked: drop --slice and --best-by")
            compare = parse_list(args.compare, "--compare", SLICES)
            metrics = parse_list(args.metrics, "--metrics") if args.metrics else DEFAULT_COMPARE_METRICS
        elif args.metrics is not None:
            raise ValueError("--metrics chooses --compare's columns; add --compare A,B (e.g. all,stream)")
        runs, skipped = collect_runs(args.dirs)
        for reason in skipped:
            print(f"yambda-report: skipped {reason}", file=sys.stderr)
        if compare is not None:
            check_compare(runs, compare, metrics, ", ".join(map(str, args.dirs)))
            text = COMPARE_RENDERERS[args.format](runs, compare, metrics)
            print(text, end="" if text.endswith("\n") else "\n")
            return 0
        selected = select_slice(runs, args.slice)
        if runs and not any(holds_slice(run, args.slice) for run in runs):
            raise ValueError(
                f"--slice {args.slice!r}: no run under {', '.join(map(str, args.dirs))} holds it (runs from before "
                f"the slices, or without the streaming evaluation); valid choices: {', '.join(SLICES)}"
            )
        known = {name for run in selected for name in (run.get("metrics") or {})}
        if args.best_by is not None and runs and args.best_by not in known:  # the default may be absent: no mark
            valid = ", ".join(sorted(known))
            raise ValueError(f"--best-by {args.best_by!r} is not a metric of these runs; valid choices: {valid}")
        text = RENDERERS[args.format](runs, args.best_by or DEFAULT_BEST_BY, args.slice)
        print(text, end="" if text.endswith("\n") else "\n")
    except (FileNotFoundError, KeyError, ValueError) as err:  # ValueError: also unreadable JSON
        print(f"yambda-report: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
