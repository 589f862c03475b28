"""Write a results table into README.md, between its `<name>:begin/end` markers, from the runs themselves.

usage: python scripts/readme_results.py [RUNS_DIR] [--readme README.md] [--block demo-results] [--made-by CMD]
        [-- REPORT_ARGS...]
    `make readme-results` after `make demo`; `make zoo-results` after `make zoo` (the sequential zoo over seeds);
    arguments after `--` go to yambda-report (another layout of the same runs)

The table is `yambda-report RUNS_DIR --format markdown`, so the README shows what a run measured, never a hand copy.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path


def markers(block: str) -> tuple[str, str]:
    return f"<!-- {block}:begin -->", f"<!-- {block}:end -->"


BEGIN, END = markers("demo-results")


def splice(readme: str, table: str, note: str, block: str = "demo-results") -> str:
    """README text with the block between the markers replaced by `note` and `table`."""
    begin, end = markers(block)
    if readme.count(begin) != 1 or readme.count(end) != 1 or readme.index(begin) > readme.index(end):
        raise ValueError(f"the README needs exactly one {begin} ... {end} block")
    head, rest = readme.split(begin)
    _, tail = rest.split(end)
    return f"{head}{begin}\n{note}\n\n{table.strip()}\n{end}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="outputs/demo/latest", help="the demo's run folder")
    parser.add_argument("--readme", default="README.md")
    parser.add_argument("--block", default="demo-results", help="the README block to replace")
    parser.add_argument("--made-by", default="make readme-results", help="the command named in the note")
    argv = sys.argv[1:] if argv is None else argv
    report_args = argv[argv.index("--") + 1 :] if "--" in argv else []
    args = parser.parse_args(argv[: argv.index("--")] if "--" in argv else argv)
    runs = Path(args.runs)
    if not runs.is_dir():
        sys.exit(f"readme_results: {runs} is not a folder; run `make demo` first")
    report = subprocess.run(
        [sys.executable, "-m", "yambda_dl.report", str(runs), "--format", "markdown", *report_args],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = runs.resolve()
    shown = folder.relative_to(Path.cwd()) if folder.is_relative_to(Path.cwd()) else folder
    note = f"_Generated from the runs in `{shown}` on {datetime.date.today()} by `{args.made_by}`._"
    readme = Path(args.readme)
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(splice(readme.read_text(), report.stdout, note, args.block))
    tmp.replace(readme)
    print(f"{readme}: results table from {runs}")


if __name__ == "__main__":
    main()
