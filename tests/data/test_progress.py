"""utils/progress.py: progress through logging, one global switch, a tqdm bar only on a terminal.

(Here beside the data tests, whose long steps use it.)"""

from __future__ import annotations

import io
import logging

import pytest

from yambda_dl.utils import progress
from yambda_dl.utils.progress import Progress


@pytest.fixture(autouse=True)
def _restore_switch():
    yield
    progress.set_enabled(True)


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_lines_and_the_summary_go_through_logging(caplog):
    with caplog.at_level(logging.INFO, logger="yambda_dl"):
        bar = Progress("step", total=10, unit="rows", interval=0.0, stream=io.StringIO())
        bar.update(4)
        line = bar.summary("4 rows done")
    assert "step: 4/10 rows" in caplog.text
    assert line.startswith("step: 4 rows done in ") and line in caplog.text


def test_the_global_switch_silences_progress_but_not_the_summary(caplog):
    progress.set_enabled(False)
    assert not progress.enabled()
    with caplog.at_level(logging.INFO, logger="yambda_dl"):
        bar = Progress("step", total=10, interval=0.0, stream=FakeTerminal())
        bar.update(4)
        bar.summary("done")
    assert "4/10" not in caplog.text and "step: done in" in caplog.text
    assert bar._bar is None


def test_a_terminal_gets_a_tqdm_bar_and_a_pipe_gets_none(caplog):
    pytest.importorskip("tqdm")
    terminal = FakeTerminal()
    with caplog.at_level(logging.INFO, logger="yambda_dl"):
        bar = Progress("step", total=10, unit="rows", interval=0.0, stream=terminal)
        bar.update(4)
        bar.summary("done")
    assert "step" in terminal.getvalue()  # tqdm drew on the terminal
    assert "4/10 rows" not in caplog.text  # and no progress log lines beside it
    assert Progress("step", stream=io.StringIO())._bar is None
