"""Every notebook runs top to bottom (on the tiny synthetic preset), so none of them rots, and shows its figures."""

from __future__ import annotations

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = sorted((Path(__file__).resolve().parents[1] / "notebooks").glob("*.ipynb"))
# A cell that draws: it must display a PNG, or a reader of the notebook sees no figure (a forced Agg backend did that).
DRAWS = ("plt.subplots(", "plt.figure(", "plt.plot(")


def figure_cells_without_image(notebook: nbformat.NotebookNode) -> list[int]:
    """Indices of executed code cells that draw a figure but displayed no image/png output."""
    missing = []
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type != "code" or not any(call in cell.source for call in DRAWS):
            continue
        if not any("image/png" in output.get("data", {}) for output in cell.outputs):
            missing.append(index)
    return missing


@pytest.mark.slow
@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path, monkeypatch):
    monkeypatch.setenv("YAMBDA_NOTEBOOK_ROOT", str(tmp_path))
    # A headless CI often exports MPLBACKEND=Agg; the notebook's `%matplotlib inline` must still win.
    monkeypatch.setenv("MPLBACKEND", "Agg")
    notebook = nbformat.read(path, as_version=4)
    NotebookClient(
        notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
    ).execute()
    missing = figure_cells_without_image(notebook)
    assert not missing, f"{path.name}: cells {missing} draw a figure but display no image (is a backend forced?)"
