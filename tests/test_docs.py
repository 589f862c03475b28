"""The repository stands alone: every docs/ citation resolves to a file and a heading, and nothing cites a file
outside the repository (the team's research notes, or the folder shared beside the checkout)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
# where citations live: the package, its configs, tests, benchmarks, notebooks and the top-level documents
SOURCES = sorted(
    p
    for pattern in (
        "yambda_dl/**/*.py",
        "configs/**/*.yaml",
        "tests/**/*.py",
        "benchmarks/**/*.py",
        "notebooks/*.ipynb",
    )
    for p in ROOT.glob(pattern)
) + [ROOT / name for name in ("README.md", "BENCHMARKS.md", "Makefile") if (ROOT / name).exists()]
CITATION = re.compile(r"docs/([\w\-]+\.md)(?:#([\w\-]+))?")
# the notes' file names and the sibling folder, spelled so that this file does not cite them itself
OUTSIDE = re.compile(
    "|".join(re.escape(name) for name in ("SPEC" + ".md", "DESIGN" + ".md", "../" + "shared", "shared" + "/data/"))
)


def anchors(markdown: Path) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped (except - and _), spaces to hyphens."""
    headings = re.findall(r"^#{1,6}\s+(.+?)\s*$", re.sub(r"```.*?```", "", markdown.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.lower()).replace(" ", "-") for h in headings}


def test_every_docs_citation_resolves():
    this = Path(__file__).resolve()
    missing = [
        f"{p.relative_to(ROOT)}: docs/{name}" + (f"#{anchor}" if anchor else "")
        for p in SOURCES
        if p.resolve() != this
        for name, anchor in CITATION.findall(p.read_text())
        if not (DOCS / name).is_file() or (anchor and anchor not in anchors(DOCS / name))
    ]
    assert not missing, "citations of a missing docs file or heading:\n" + "\n".join(sorted(set(missing)))


def test_nothing_cites_a_file_outside_the_repository():
    this = Path(__file__).resolve()
    found = [
        f"{p.relative_to(ROOT)}:{n}: {line.strip()[:100]}"
        for p in SOURCES
        if p.resolve() != this
        for n, line in enumerate(p.read_text().splitlines(), 1)
        if OUTSIDE.search(line)
    ]
    assert not found, "cites a file that is not in the repository (use docs/):\n" + "\n".join(found)


@pytest.mark.parametrize("page", [*sorted(DOCS.glob("*.md")), ROOT / "README.md"], ids=lambda p: p.name)
def test_relative_links_in_the_docs_resolve(page):
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", text):
        if re.match(r"^[a-z]+:", target):  # http(s), mailto: not checked offline
            continue
        file, _, anchor = target.partition("#")
        path = (page.parent / file).resolve() if file else page
        if not path.exists() or (anchor and path.suffix == ".md" and anchor not in anchors(path)):
            broken.append(target)
    assert not broken, f"{page.name}: broken links {broken}"
