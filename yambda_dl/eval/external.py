"""Our protocol for anyone's recommendations: a raw-id table (uid, item_ids list) -> the metrics of a run.

`yambda-eval RECS.parquet --root DATA_ROOT --size 50m --out DIR` scores recommendations made by any library
(implicit, RecTools, RePlay, ...) on the split yambda-train would use, and writes the same run folder as a run
(run.json, config.yaml, manifest.json, metrics.json), so `yambda-report` lists it beside our models.

How a table is read (docs/protocol.md):
- one row per ranked user: `uid` (integer) and `item_ids` (list of integers, best first); `scores` (list of
  floats, the same length) is optional and only checked: the order of `item_ids` is the ranking;
- a uid that is not a ranked user of the split, a repeated uid, a null, or an item twice in one user's top K is an
  error, raised before any metric is computed;
- only the first K = max(ks) items of a list count; a shorter list is allowed, its empty ranks are misses;
- an item that is not a candidate (a train item; with `--candidates train_and_cold` also an item with an audio
  vector and no train event) stays at its rank and counts as a miss (never a hit, never in coverage), and a warning
  gives the count. Dropping it instead would move the later items up and score the list better than it was
  submitted;
- a ranked user without a row gets an empty list (every rank a miss), with a warning giving the count: the protocol
  evaluates every evaluated user, so leaving users out never raises a score.

metrics.json holds, beside the all-target "metrics", the target slices a run reports ("organic", "recommended",
"warm", "cold": eval/slices.py), scored on the same lists.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
import pyarrow as pa
import pyarrow.compute as pc
import torch

from yambda_dl.eval.evaluator import DEFAULT_KS, evaluate, format_metrics_table, format_slices_table
from yambda_dl.eval.settings import EvalSettings
from yambda_dl.eval.slices import TARGET_SLICES

if TYPE_CHECKING:
    from yambda_dl.data.split import Split

log = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("uid", "item_ids")
SHOWN = 5  # ids named in an error message; the count says how many more there are
EMPTY = np.iinfo(np.int64).min  # a rank after the end of a list, while ranks hold raw ids (any int64 may be given)


class RecommendationsError(ValueError):
    """A recommendations table that cannot be scored; the message names the file, the column and the values."""


@dataclass(frozen=True)
class ListReport:
    """How a table met the split: what was filled in or counted as misses (recorded in metrics.json)."""

    rows: int  # users with a row
    missing_users: int  # ranked users without a row: empty lists
    missing_evaluated_users: int  # of them, users with targets (they score 0)
    short_lists: int  # rows with fewer than K items: the empty ranks are misses
    non_candidate_items: int  # items in the top K that are not candidates: misses in place
    truncated_lists: int  # rows with more than K items: only the first K count


# --- raw ids -> dense -----------------------------------------------------------------------------------------


def read_recommendations(path: Path | str) -> pl.DataFrame:
    """The table in a Parquet file, its columns checked (uid, item_ids; scores optional)."""
    path = Path(path)
    if not path.is_file():
        raise RecommendationsError(f"{path}: no such recommendations file")
    try:
        frame = pl.read_parquet(path)
    except Exception as error:  # polars raises several types for a file that is not Parquet
        raise RecommendationsError(f"{path}: not a readable Parquet file ({error})") from error
    check_recommendations(frame, str(path))
    return frame


def check_recommendations(recs: pl.DataFrame, source: str = "recommendations") -> None:
    """Columns, types, nulls, repeated uids and list lengths: everything checkable without the split."""
    missing = [name for name in REQUIRED_COLUMNS if name not in recs.columns]
    if missing:
        raise RecommendationsError(
            f"{source}: missing column(s) {missing}; found {recs.columns}; a recommendations table holds uid "
            f"(integer), item_ids (list of integers, best first) and optionally scores (list of floats)"
        )
    if not recs.schema["uid"].is_integer():
        raise RecommendationsError(f"{source}: column uid is {recs.schema['uid']}; it must hold integer raw user ids")
    for name, inner in (("item_ids", "integer raw item ids"), ("scores", "numbers")):
        if name not in recs.columns:
            continue
        dtype = recs.schema[name]
        ok = isinstance(dtype, pl.List) and (
            dtype.inner.is_integer() if name == "item_ids" else dtype.inner.is_numeric()
        )
        if not ok:
            raise RecommendationsError(f"{source}: column {name} is {dtype}; it must be a list of {inner} per user")
    if recs.height == 0:
        raise RecommendationsError(f"{source}: no rows; give one row per ranked user")
    lists = recs.get_column("item_ids")
    nulls = {
        "uid": recs.get_column("uid").null_count(),
        "item_ids": lists.null_count(),
        "item_ids' elements": pc.list_flatten(_arrow(lists)).null_count,
    }
    for what, count in nulls.items():
        if count:
            raise RecommendationsError(f"{source}: {count} null(s) in {what}; give every user a uid and a list of ids")
    repeated = recs.filter(pl.col("uid").is_duplicated()).get_column("uid").unique().sort()
    if repeated.len():
        raise RecommendationsError(
            f"{source}: {repeated.len()} uid(s) have more than one row ({_first(repeated)}); give one row per user"
        )
    if "scores" in recs.columns:
        differ = recs.filter(
            pl.col("scores").is_null() | (pl.col("scores").list.len() != pl.col("item_ids").list.len())
        )
        if differ.height:
            raise RecommendationsError(
                f"{source}: {differ.height} row(s) have scores of another length than item_ids (uids "
                f"{_first(differ.get_column('uid'))}); give one score per item, or drop the scores column"
            )


def to_dense(
    recs: pl.DataFrame, split: Split, k: int, source: str = "recommendations"
) -> tuple[torch.Tensor, ListReport]:
    """(candidate index (num_ranked_users, k) int64, -1 = no item or a non-candidate, row = user_idx; ListReport).

    The table is checked first (check_recommendations) and against the split: every uid a ranked user, no item
    twice in one user's top k. Vectorized: one pass over the flattened lists, no loop over users.
    """
    check_recommendations(recs, source)
    uids = recs.get_column("uid").to_numpy()
    user_idx = split.user_index(uids)
    unknown = np.unique(uids[user_idx < 0])
    if len(unknown):
        raise RecommendationsError(
            f"{source}: {len(unknown)} uid(s) are not ranked users of the split ({_first(unknown)}); the split "
            f"({split.protocol.setup}, {split.protocol.mode}) ranks the {split.num_users:,} users with a train "
            f"event: check the data root, size, setup and mode"
        )
    lengths_all = recs.get_column("item_ids").list.len().to_numpy()
    lengths, raw_items = _flat_lists(recs.get_column("item_ids").list.head(k))
    starts = np.zeros(len(lengths) + 1, dtype=np.int64)
    np.cumsum(lengths, out=starts[1:])
    rows = np.repeat(user_idx, lengths)
    ranks = np.arange(len(raw_items), dtype=np.int64) - np.repeat(starts[:-1], lengths)
    dense = np.full((split.num_users, k), EMPTY, dtype=np.int64)  # raw ids first, for the repeat check
    dense[rows, ranks] = raw_items
    _check_no_repeats(dense, split, source)
    item_idx = split.candidate_index(raw_items)  # train items; cold candidates after them (train_and_cold)
    dense[rows, ranks] = item_idx
    dense[dense == EMPTY] = -1
    has_row = np.zeros(split.num_users, dtype=bool)
    has_row[user_idx] = True
    report = ListReport(
        rows=len(uids),
        missing_users=int((~has_row).sum()),
        missing_evaluated_users=int((~has_row[split.targets.user_idx]).sum()),
        short_lists=int((lengths_all < k).sum()),
        non_candidate_items=int((item_idx < 0).sum()),
        truncated_lists=int((lengths_all > k).sum()),
    )
    _warn(report, split, k, source)
    return torch.from_numpy(dense), report


def _flat_lists(lists: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """(length of each list, all their values concatenated) of a list column, without a Python loop."""
    array = _arrow(lists)
    lengths = pc.list_value_length(array).to_numpy(zero_copy_only=False).astype(np.int64)
    values = pc.list_flatten(array).to_numpy(zero_copy_only=False).astype(np.int64)
    return lengths, values


def _arrow(series: pl.Series) -> pa.Array:
    array = series.to_arrow()
    return array.combine_chunks() if isinstance(array, pa.ChunkedArray) else array


def _check_no_repeats(raw: np.ndarray, split: Split, source: str) -> None:
    """An item twice in one user's top k would count twice as a hit: refuse it. raw: (users, k) raw ids, EMPTY
    where a list ended; sorting each row (k log k per user) finds repeats as equal neighbours."""
    ordered = np.sort(raw, axis=1)
    same = (ordered[:, 1:] == ordered[:, :-1]) & (ordered[:, 1:] != EMPTY)
    if same.any():
        user, rank = np.argwhere(same)[0]
        users = int(same.any(axis=1).sum())
        raise RecommendationsError(
            f"{source}: {users} user(s) have an item twice in their top k (uid {split.users[user]} lists item "
            f"{ordered[user, rank]} twice); a top-k list names each item once"
        )


def _warn(report: ListReport, split: Split, k: int, source: str) -> None:
    if report.missing_users:
        log.warning(
            "%s: %d of %d ranked users have no row (%d of them evaluated): scored as empty lists, every rank a miss",
            source,
            report.missing_users,
            split.num_users,
            report.missing_evaluated_users,
        )
    if report.non_candidate_items:
        log.warning(
            "%s: %d recommended item(s) in the top %d are not candidates (protocol.candidates=%s): "
            "counted as misses at their ranks",
            source,
            report.non_candidate_items,
            k,
            split.protocol.candidates,
        )
    if report.short_lists:
        log.info("%s: %d list(s) are shorter than k=%d: their empty ranks are misses", source, report.short_lists, k)
    if report.truncated_lists:
        log.info(
            "%s: %d list(s) are longer than k=%d: only the first %d items count", source, report.truncated_lists, k, k
        )


def _first(values: Any) -> str:
    """The first few values of a sequence for a message, with how many more there are."""
    values = list(values.to_list() if isinstance(values, pl.Series) else np.asarray(values).tolist())
    shown = ", ".join(str(v) for v in values[:SHOWN])
    return f"{shown}, ... {len(values) - SHOWN} more" if len(values) > SHOWN else shown


# --- dense -> raw ids -----------------------------------------------------------------------------------------


def recommendations_frame(split: Split, items: torch.Tensor, scores: torch.Tensor | None = None) -> pl.DataFrame:
    """recommendations_table as a polars DataFrame (the Python API's result)."""
    return pl.from_arrow(recommendations_table(split, items, scores))


def recommendations_table(split: Split, items: torch.Tensor, scores: torch.Tensor | None = None) -> pa.Table:
    """uid, item_ids (list), scores (list) in raw ids, one row per ranked user; the -1 padding dropped.

    items/scores: (num_ranked_users, k) as recommend_all returns them (row = user_idx). The one dense -> raw-id
    conversion: recommendations.parquet, the Python API and yambda-eval's frames all come from it.
    """
    items_np = np.asarray(items)
    valid = items_np >= 0
    offsets = np.zeros(len(items_np) + 1, dtype=np.int32)
    np.cumsum(valid.sum(axis=1), out=offsets[1:])
    columns = {
        "uid": pa.array(split.users, pa.uint32()),
        "item_ids": pa.ListArray.from_arrays(pa.array(offsets), pa.array(split.items[items_np[valid]], pa.uint32())),
    }
    if scores is not None:
        values = np.asarray(scores, dtype=np.float32)[valid]
        columns["scores"] = pa.ListArray.from_arrays(pa.array(offsets), pa.array(values, pa.float32()))
    return pa.table(columns)


# --- the metrics, and a run folder --------------------------------------------------------------------------


def evaluate_recommendations(
    recs: pl.DataFrame | Path | str, split: Split, ks: Sequence[int] = DEFAULT_KS, source: str | None = None
) -> tuple[dict[str, float], ListReport]:
    """The metrics a run would report for these raw-id recommendations (evaluator.evaluate on the dense lists)."""
    metrics, _, report = score_recommendations(recs, split, ks, source, slices=False)
    return metrics, report


def score_recommendations(
    recs: pl.DataFrame | Path | str,
    split: Split,
    ks: Sequence[int] = DEFAULT_KS,
    source: str | None = None,
    *,
    slices: bool = True,
) -> tuple[dict[str, float], dict[str, dict[str, float] | None], ListReport]:
    """(metrics, {slice: metrics or None}, ListReport): evaluate_recommendations plus the target slices a run
    reports (EvalSettings.score_slices on the same dense lists; {} with slices=False)."""
    if not isinstance(recs, pl.DataFrame):
        source = source or str(recs)
        recs = read_recommendations(recs)
    ks = sorted({int(k) for k in ks})
    if not ks or ks[0] < 1:
        raise ValueError(f"ks={ks}: cutoffs must be positive integers, e.g. 10 50 100")
    dense, report = to_dense(recs, split, ks[-1], source or "recommendations")
    metrics = evaluate(dense, split.targets, int(getattr(split, "num_candidates", split.num_items)), ks)
    # coverage does not depend on the targets: every slice repeats the all-target figure
    by_slice = EvalSettings(ks=tuple(ks)).score_slices(dense, split, catalogue=metrics) if slices else {}
    return metrics, by_slice, report


def default_data_name(root: Path | str, size: str) -> str:
    """The name yambda-train's data configs give a dataset: yambda_<size> for a release, else the root's folder."""
    from yambda_dl.data.schema import RELEASE_SIZES

    return f"yambda_{size}" if size in RELEASE_SIZES else Path(root).expanduser().resolve().name


def run_eval(
    recommendations: Path | str,
    out_dir: Path | str,
    *,
    root: Path | str,
    size: str,
    setup: str = "listen_plus",
    mode: str = "final",
    fmt: str = "flat",
    candidates: str = "train",
    ks: Sequence[int] = DEFAULT_KS,
    cache_dir: Path | str | None = None,
    model_name: str | None = None,
    data_name: str | None = None,
) -> dict[str, Any]:
    """Score a recommendations Parquet on the split of (root, size, setup, mode, fmt); write a run folder in
    out_dir (run.json, config.yaml, manifest.json, metrics.json) and return metrics.json's dict."""
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split
    from yambda_dl.utils import runinfo
    from yambda_dl.utils.rundir import RunFolder, new_run_id

    started = time.perf_counter()
    recommendations = Path(recommendations)
    protocol = Protocol(setup=setup, mode=mode, candidates=candidates)  # bad values: an error naming the choices
    layout = DatasetLayout(Path(root), size)
    ks = sorted({int(k) for k in ks})
    t = time.perf_counter()
    recs = read_recommendations(recommendations)  # every check that needs no split, before the folder is claimed
    timings = {"read_s": time.perf_counter() - t}
    model_name = model_name or recommendations.stem
    data_name = data_name or default_data_name(root, size)
    folder = RunFolder(Path(out_dir), new_run_id())
    folder.claim()
    try:
        t = time.perf_counter()
        split = make_split(layout, protocol, fmt=fmt, cache_dir=Path(cache_dir) if cache_dir else None)
        timings["split_s"] = time.perf_counter() - t
        t = time.perf_counter()
        metrics, slices, report = score_recommendations(recs, split, ks, source=str(recommendations))
        timings["evaluate_s"] = time.perf_counter() - t
        folder.write_config(
            {
                "model": {"name": model_name},
                "data": {"name": data_name, "root": str(layout.root), "size": size, "format": fmt},
                "protocol": {"setup": setup, "mode": mode, "candidates": candidates},
                "ks": ks,
                "eval": {"source": "yambda-eval"},
                "recommendations": str(recommendations.resolve()),
                "paths": {"cache_dir": str(cache_dir) if cache_dir else None},
            }
        )
        folder.write_manifest(
            {
                "data_fingerprint": split.meta["source"]["fingerprint"],
                "split_key": split.key,
                "split_path": str(split.path),
                "recommendations": {"path": str(recommendations.resolve()), "sha256": _sha256(recommendations)},
                "versions": runinfo.package_versions(),
                "git_revision": runinfo.git_revision(),
                "machine": runinfo.machine(),
                "command": runinfo.command_line(),
            }
        )
        timings["total_s"] = time.perf_counter() - started
        result = {
            "model": model_name,
            "data": data_name,
            "size": size,
            "setup": setup,
            "mode": mode,
            "filter_seen": None,  # unknown: the lists were made elsewhere
            "metrics": metrics,
            **slices,  # organic, recommended, warm, cold: as a run's metrics.json
            "recommendations": asdict(report),
            "timings": timings,
            "peak_memory_mb": runinfo.peak_rss_mb(),
            "split": split.describe(),
        }
        folder.finish(result)
    except BaseException:
        folder.fail()
        raise
    return {"run_id": folder.run_id, **result}


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def main(argv: list[str] | None = None) -> int:
    """`yambda-eval RECS.parquet --root DATA_ROOT --size SIZE --out DIR`: print the metrics table, write the run."""
    from yambda_dl.data.split import CANDIDATES

    parser = argparse.ArgumentParser(
        prog="yambda-eval", description="Score raw-id recommendations (uid, item_ids) with the Yambda protocol."
    )
    parser.add_argument("recommendations", type=Path, help="Parquet: uid, item_ids (list, best first), scores (opt.)")
    parser.add_argument("--root", type=Path, required=True, help="the dataset root (the Hugging Face layout)")
    parser.add_argument("--size", required=True, help="50m, 500m, 5b, or a synthetic dataset's name")
    parser.add_argument("--setup", default="listen_plus", choices=("listen_plus", "like"))
    parser.add_argument("--mode", default="final", choices=("final", "tune"))
    parser.add_argument("--format", dest="fmt", default="flat", choices=("flat", "sequential"))
    parser.add_argument(
        "--candidates",
        default="train",
        choices=CANDIDATES,
        help="train (the paper's) or train_and_cold: also the items with an audio vector and no train event",
    )
    parser.add_argument("--ks", type=int, nargs="+", default=list(DEFAULT_KS), help="cutoffs (default 10 50 100)")
    parser.add_argument("--out", type=Path, required=True, help="the run folder to write (claimed like a run's)")
    parser.add_argument("--cache-dir", type=Path, default=None, help="split cache (default ROOT/.cache/splits)")
    parser.add_argument("--model-name", default=None, help="the row's name in yambda-report (default: file stem)")
    parser.add_argument("--data-name", default=None, help="default: yambda_<size>, or the root's folder name")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        result = run_eval(
            args.recommendations,
            args.out,
            root=args.root,
            size=args.size,
            setup=args.setup,
            mode=args.mode,
            fmt=args.fmt,
            candidates=args.candidates,
            ks=args.ks,
            cache_dir=args.cache_dir,
            model_name=args.model_name,
            data_name=args.data_name,
        )
    except (ValueError, FileNotFoundError, RuntimeError) as error:
        print(f"yambda-eval: error: {error}", file=sys.stderr)
        return 2
    print(f"\n{result['model']} on {result['data']} ({args.setup}, {args.mode}); outputs in {args.out}")
    ks = sorted(set(args.ks))
    print(format_metrics_table(result["metrics"], ks))
    slices = {name: value for name, value in result.items() if name in TARGET_SLICES}
    print(f"\ntarget slices:\n{format_slices_table(slices, ks)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
