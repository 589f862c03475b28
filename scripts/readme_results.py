"""Write a demo's results table into README.md, between its `demo-results` markers, from the runs themselves.

usage: python scripts/readme_results.py [RUNS_DIR] [--readme README.md]     (`make readme-results` after `make demo`)

The table is `yambda-report RUNS_DIR --format markdown`, so the README shows what a run measured, never a hand copy.
"""

from __future__ import annotations

import argparse
import datetime
import subprocess
import sys
from pathlib import Path

BEGIN, END = "<!-- demo-results:begin -->", "<!-- demo-results:end -->"


def splice(readme: str, table: str, note: str) -> str:
    """README text with the block between the markers replaced by `note` and `table`."""
    if readme.count(BEGIN) != 1 or readme.count(END) != 1 or readme.index(BEGIN) > readme.index(END):
        raise ValueError(f"the README needs exactly one {BEGIN} ... {END} block")
    head, rest = readme.split(BEGIN)
    _, tail = rest.split(END)
    return f"{head}{BEGIN}\n{note}\n\n{table.strip()}\n{END}{tail}"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="?", default="outputs/demo/latest", help="the demo's run folder")
    parser.add_argument("--readme", default="README.md")
    args = parser.parse_args(argv)
    runs = Path(args.runs)
    if not runs.is_dir():
        sys.exit(f"readme_results: {runs} is not a folder; run `make demo` first")
    report = subprocess.run(
        [sys.executable, "-m", "yambda_dl.report", str(runs), "--format", "markdown"],
        capture_output=True,
        text=True,
        check=True,
    )
    folder = runs.resolve().name
    note = f"_Generated from the runs in `outputs/demo/{folder}` on {datetime.date.today()} by `make readme-results`._"
    readme = Path(args.readme)
    tmp = readme.with_name(f".{readme.name}.tmp")
    tmp.write_text(splice(readme.read_text(), report.stdout, note))
    tmp.replace(readme)
    print(f"{readme}: results table from {runs}")


if __name__ == "__main__":
    main()
