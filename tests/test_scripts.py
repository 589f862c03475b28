"""scripts/: the README's results table comes from runs, spliced between its markers."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "readme_results.py"


def _module():
    spec = importlib.util.spec_from_file_location("readme_results", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_splice_replaces_only_the_block():
    m = _module()
    readme = f"intro\n{m.BEGIN}\nold table\n{m.END}\noutro\n"
    out = m.splice(readme, "| a |\n|---|\n", "note")
    assert out == f"intro\n{m.BEGIN}\nnote\n\n| a |\n|---|\n{m.END}\noutro\n"
    assert m.splice(out, "| b |", "note2").count("| a |") == 0


def test_the_repository_readme_has_one_block():
    m = _module()
    readme = (SCRIPT.parents[1] / "README.md").read_text()
    assert m.splice(readme, "| t |", "n").count(m.BEGIN) == 1


@pytest.mark.parametrize("bad", ["no markers", "<!-- demo-results:end --> <!-- demo-results:begin -->"])
def test_a_readme_without_one_block_is_refused(bad):
    with pytest.raises(ValueError, match="exactly one"):
        _module().splice(bad, "| t |", "n")
