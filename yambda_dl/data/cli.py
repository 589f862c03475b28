"""`yambda-data`: download, synthesise, convert, describe and split Yambda datasets from the command line.

A thin wrapper: each subcommand parses its arguments and calls one function of yambda_dl.data.
"""

from __future__ import annotations

import argparse
import logging
import sys
from pathlib import Path

from yambda_dl.data import schema as S


def _download(args: argparse.Namespace) -> None:
    from yambda_dl.data.layout import download
    from yambda_dl.utils.progress import Progress

    progress = Progress(f"download {args.size}", unit="files")
    paths = download(
        args.size,
        args.root,
        formats=args.format,
        events=args.events,
        embeddings=args.embeddings,
        mappings=args.mappings,
        revision=args.revision,
    )
    progress.update(len(paths))
    progress.summary(f"{len(paths)} files under {args.root}")


def _synth(args: argparse.Namespace) -> None:
    from yambda_dl.data.synthetic import generate, parse_overrides

    overrides = parse_overrides(args.set)  # one-line errors before anything is written
    summary = generate(args.preset, Path(args.root), seed=args.seed, overwrite=args.overwrite, overrides=overrides)
    print(f"{summary.name}: {summary.users:,} users, {summary.items:,} items, {summary.rows} under {summary.root}")


def _convert(args: argparse.Namespace) -> None:
    from yambda_dl.data.convert import convert_layout
    from yambda_dl.data.layout import DatasetLayout

    convert_layout(DatasetLayout(args.root, args.size), to=args.to, event_files=args.events)


def _stats(args: argparse.Namespace) -> None:
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.stats import compute_stats, format_stats

    print(format_stats(compute_stats(DatasetLayout(args.root, args.size), fmt=args.format)))


def _split(args: argparse.Namespace) -> None:
    from yambda_dl.data.layout import DatasetLayout
    from yambda_dl.data.split import Protocol, make_split

    protocol = Protocol(setup=args.setup, mode=args.mode, dedup_targets=args.dedup_targets)
    split = make_split(
        DatasetLayout(args.root, args.size),
        protocol,
        fmt=args.format,
        cache_dir=Path(args.cache_dir) if args.cache_dir else None,
    )
    print(split)
    if args.export:
        split.export(Path(args.export))
        print(f"exported train.parquet and targets.parquet to {args.export}")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="yambda-data", description=__doc__.splitlines()[0])
    parser.add_argument("--quiet", action="store_true", help="no progress bars or lines, warnings and errors only")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("download", help="fetch release files from the Hugging Face hub (resumable)")
    p.add_argument("--size", required=True, choices=S.RELEASE_SIZES)
    p.add_argument("--root", required=True, help="dataset root; files keep the hub's layout below it")
    p.add_argument("--format", nargs="+", default=["flat"], choices=S.FORMATS)
    p.add_argument("--events", nargs="+", default=list(S.EVENT_FILES), choices=S.EVENT_FILES)
    p.add_argument("--embeddings", action="store_true", help="also fetch embeddings.parquet (about 13.8 GB)")
    p.add_argument("--mappings", action="store_true", help="also fetch the artist and album mappings")
    p.add_argument("--revision", default=None, help="a hub revision (commit) to pin")
    p.set_defaults(func=_download)

    p = sub.add_parser("synth", help="write a Yambda-like synthetic dataset in the release layout")
    p.add_argument("--preset", required=True, help="tiny (tests), small (the demo) or 50m (Yambda-50M's shape)")
    p.add_argument("--root", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--overwrite", action="store_true", help="regenerate even if the dataset is there")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a size or behaviour setting of the preset (repeatable; tuples comma-separated)",
    )
    p.set_defaults(func=_synth)

    p = sub.add_parser("convert", help="convert a dataset's files between the flat and sequential layouts")
    p.add_argument("--root", required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--to", required=True, choices=S.FORMATS)
    p.add_argument("--events", nargs="+", default=list(S.EVENT_FILES), choices=S.EVENT_FILES)
    p.set_defaults(func=_convert)

    p = sub.add_parser("stats", help="print a dataset's statistics beside the real Yambda's (docs/data.md)")
    p.add_argument("--root", required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--format", default="flat", choices=S.FORMATS)
    p.set_defaults(func=_stats)

    p = sub.add_parser("split", help="compute (and cache) the Global Temporal Split; optionally export it")
    p.add_argument("--root", required=True)
    p.add_argument("--size", required=True)
    p.add_argument("--setup", default="listen_plus", choices=("listen_plus", "like"))
    p.add_argument("--mode", default="final", choices=("final", "tune"))
    p.add_argument("--format", default="flat", choices=S.FORMATS)
    p.add_argument("--dedup-targets", action="store_true", help="drop repeated target items (off in the protocol)")
    p.add_argument("--cache-dir", default=None, help="where splits are cached (default ROOT/.cache/splits)")
    p.add_argument(
        "--export",
        default=None,
        metavar="OUT",
        help="write OUT/train.parquet and OUT/targets.parquet in raw ids for use in any library",
    )
    p.set_defaults(func=_split)
    return parser


def _configure_logging(quiet: bool) -> None:
    """Log lines (progress, summaries, warnings) to stderr; configured here, never at import."""
    from yambda_dl.utils import progress

    logging.basicConfig(level=logging.WARNING if quiet else logging.INFO, format="%(message)s", stream=sys.stderr)
    progress.set_enabled(not quiet)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _configure_logging(args.quiet)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:  # our validation errors: one clear line, no traceback
        print(f"yambda-data {args.command}: error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
