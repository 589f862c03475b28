"""Create-once caches: io.build_once / build_file_once, the split cache and the sequence cache across processes."""

from __future__ import annotations

import hashlib
import logging
import multiprocessing
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.sequences import scoring_matrix, user_sequences
from yambda_dl.data.split import Protocol, SplitError, load_split, make_split

TEST_START = 25_913_600


def write_listens(root: Path, users: int = 40, per_user: int = 60, seed: int = 0) -> DatasetLayout:
    """A small listens file: every user listens before the test day and some in it (5-second grid)."""
    rng = np.random.default_rng(seed)
    uid = np.repeat(np.arange(users, dtype=np.uint32), per_user)
    ts = np.sort(rng.integers(0, TEST_START // 5 - 1000, size=(users, per_user)), axis=1).ravel() * 5
    ts[per_user - 3 :: per_user] = TEST_START + 5 * rng.integers(0, 1000, size=users)  # a few test-day events
    ts = np.sort(ts.reshape(users, per_user), axis=1).ravel()
    n = len(uid)
    table = pa.table(
        {
            "uid": pa.array(uid, pa.uint32()),
            "timestamp": pa.array(ts.astype(np.uint32), pa.uint32()),
            "item_id": pa.array(rng.integers(1, 500, n).astype(np.uint32), pa.uint32()),
            "is_organic": pa.array(rng.integers(0, 2, n).astype(np.uint8), pa.uint8()),
            "played_ratio_pct": pa.array(rng.integers(0, 101, n).astype(np.uint16), pa.uint16()),
            "track_length_seconds": pa.array(np.full(n, 200, np.uint32), pa.uint32()),
        },
        schema=S.flat_schema("listens"),
    )
    layout = DatasetLayout(root, "hand")
    path = layout.event_path("listens")
    path.parent.mkdir(parents=True)
    pq.write_table(table, path)
    return layout


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


class _Built(logging.Handler):
    """Remembers whether this process logged a split build's summary (so the test can count builds)."""

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.builds = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "train events" in record.getMessage() and "ranked users" in record.getMessage():
            self.builds += 1


def _worker(root: str, barrier, results) -> None:
    """One 'run': wait for the others, then open the split and SASRec's sequence files on the shared fresh root."""
    handler = _Built()
    logger = logging.getLogger("yambda_dl")
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    layout = DatasetLayout(root, "hand")
    barrier.wait()
    split = make_split(layout, Protocol(), progress=False)
    sequences = user_sequences(split, 8)
    scoring = scoring_matrix(split, 8)
    results.put(
        {
            "pid": os.getpid(),
            "builds": handler.builds,
            "created": split.meta["created"],
            "files": {n: _digest(split.path / n) for n in ("train.parquet", "targets.parquet", "users.npy")},
            "sequences": _digest(sequences),
            "scoring": hashlib.sha256(np.ascontiguousarray(scoring).tobytes()).hexdigest(),
        }
    )


@pytest.mark.slow  # four spawned interpreters: about 7 s on 2 cores
def test_processes_started_together_on_a_fresh_root_share_one_build(tmp_path):
    layout = write_listens(tmp_path / "data", users=400, per_user=300)  # enough rows that the builds would overlap
    ctx = multiprocessing.get_context("spawn")
    n = 4
    barrier, results = ctx.Barrier(n), ctx.Queue()
    workers = [ctx.Process(target=_worker, args=(str(layout.root), barrier, results)) for _ in range(n)]
    for w in workers:
        w.start()
    out = [results.get(timeout=120) for _ in range(n)]
    for w in workers:
        w.join(timeout=60)
    assert [w.exitcode for w in workers] == [0] * n
    assert sum(r["builds"] for r in out) == 1  # one process built, the others waited and read its folder
    assert len({r["created"] for r in out}) == 1
    assert len({repr(r["files"]) for r in out}) == 1
    assert len({r["sequences"] for r in out}) == 1 and len({r["scoring"] for r in out}) == 1
    cache = layout.root / ".cache" / "splits"
    assert [p.name for p in cache.iterdir()] == [load_split(next(cache.iterdir())).key]  # no temporaries, no locks
    # and the same files as a build in one process, on another root
    alone = make_split(write_listens(tmp_path / "alone", users=400, per_user=300), Protocol(), progress=False)
    assert {n: _digest(alone.path / n) for n in out[0]["files"]} == out[0]["files"]


# --- build_once -------------------------------------------------------------------------------------------------


def _complete(folder: Path) -> bool:
    return (folder / "done").is_file()


def test_build_once_builds_then_reuses(tmp_path):
    folder = tmp_path / "cache" / "thing"
    with io.build_once(folder, _complete) as tmp:
        assert tmp is not None and tmp.parent == folder.parent and tmp.name.startswith(f".tmp-thing-{os.getpid()}-")
        (tmp / "done").write_text("1")
    assert (folder / "done").read_text() == "1"
    with io.build_once(folder, _complete) as tmp:
        assert tmp is None
    assert sorted(p.name for p in folder.parent.iterdir()) == ["thing"]


def test_build_once_leaves_nothing_when_the_build_fails(tmp_path):
    folder = tmp_path / "thing"
    with pytest.raises(RuntimeError, match="mid-build"), io.build_once(folder, _complete) as tmp:
        (tmp / "half").write_text("x")
        raise RuntimeError("mid-build")
    assert list(tmp_path.iterdir()) == []


def test_build_once_replaces_an_incomplete_folder_but_never_a_complete_one(tmp_path):
    folder = tmp_path / "thing"
    folder.mkdir()
    (folder / "half").write_text("killed build")
    with io.build_once(folder, _complete) as tmp:
        (tmp / "done").write_text("new")
    assert sorted(p.name for p in folder.iterdir()) == ["done"]
    reader = open(folder / "done")  # a reader holds the complete folder's file
    with io.build_once(folder, _complete) as tmp:
        assert tmp is None
    assert reader.read() == "new"
    reader.close()


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_stale_temporaries_of_dead_processes_are_removed_but_not_live_ones(tmp_path):
    tag = io.temporary_name("x").rsplit("-", 1)[1][:4]  # this host's tag
    dead = tmp_path / f".tmp-other-{_dead_pid()}-{tag}beef"
    live = tmp_path / f".tmp-other-{os.getppid()}-{tag}cafe"  # our parent: alive
    foreign = tmp_path / ".tmp-other-123-zzzzzzzz"  # not our naming: left alone
    for path in (dead, live, foreign):
        path.mkdir()
        (path / "part").write_text("x")
    with io.build_once(tmp_path / "thing", _complete) as tmp:
        (tmp / "done").write_text("1")
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, foreign.name, "thing"])


def test_build_file_once_keeps_the_name_and_extension(tmp_path):
    path = tmp_path / "matrix.npy"
    with io.build_file_once(path, lambda p: p.is_file()) as tmp:
        assert tmp.name == "matrix.npy"
        np.save(tmp, np.arange(3))
    assert np.load(path).tolist() == [0, 1, 2]
    with io.build_file_once(path, lambda p: p.is_file()) as tmp:
        assert tmp is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["matrix.npy"]


# --- a damaged cached split ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "damage",
    ["delete_targets", "truncate_train", "edit_meta_counts", "shorter_users"],
)
def test_a_damaged_cached_split_is_rebuilt_when_opened_by_make_split(tmp_path, damage, caplog):
    layout = write_listens(tmp_path / "data")
    split = make_split(layout, Protocol(), progress=False)
    expected = {n: _digest(split.path / n) for n in ("train.parquet", "targets.parquet", "users.npy", "items.npy")}
    if damage == "delete_targets":
        (split.path / "targets.parquet").unlink()
    elif damage == "truncate_train":
        data = (split.path / "train.parquet").read_bytes()
        (split.path / "train.parquet").write_bytes(data[: len(data) // 2])
    elif damage == "edit_meta_counts":
        meta = (split.path / "meta.json").read_text()
        (split.path / "meta.json").write_text(meta.replace('"num_targets": ', '"num_targets": 1'))
    else:
        np.save(split.path / "users.npy", np.load(split.path / "users.npy")[:-1])
    with pytest.raises(SplitError, match="not a usable split folder"):
        load_split(split.path)
    with caplog.at_level(logging.WARNING, logger="yambda_dl"):
        again = make_split(layout, Protocol(), progress=False)
    assert "damaged" in caplog.text
    assert again.path == split.path
    assert {n: _digest(again.path / n) for n in expected} == expected


def test_yambda_data_split_rebuilds_a_damaged_cache(tmp_path):
    from yambda_dl.data.cli import main

    layout = write_listens(tmp_path / "data")
    args = ["split", "--root", str(layout.root), "--size", "hand"]
    assert main(args) == 0
    folder = next((layout.root / ".cache" / "splits").iterdir())
    (folder / "items.npy").unlink()
    assert main(args) == 0
    assert load_split(folder).num_items > 0


def test_a_damaged_sequence_file_is_rebuilt(tmp_path):
    split = make_split(write_listens(tmp_path / "data"), Protocol(), progress=False)
    path = user_sequences(split, 8)
    good = _digest(path)
    path.write_bytes(path.read_bytes()[:100])
    assert _digest(user_sequences(split, 8)) == good


def test_without_flock_support_a_build_still_publishes_once(tmp_path, monkeypatch, caplog):
    import errno
    import fcntl

    def no_locks(handle, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", no_locks)  # a file system without flock (stdlib patched, not our code)
    folder = tmp_path / "thing"
    with caplog.at_level(logging.WARNING, logger="yambda_dl"), io.build_once(folder, _complete) as tmp:
        (tmp / "done").write_text("ours")
        folder.mkdir()  # another process published its complete copy meanwhile
        (folder / "done").write_text("theirs")
    assert "does not support locks" in caplog.text
    assert (folder / "done").read_text() == "theirs"  # never replaced
    assert sorted(p.name for p in tmp_path.iterdir()) == ["thing"]
    path = tmp_path / "file.npy"
    with io.build_file_once(path, lambda p: p.is_file()) as tmp:
        np.save(tmp, np.arange(2))
    with io.build_file_once(path, lambda p: p.is_file()) as tmp:
        assert tmp is None
    assert np.load(path).tolist() == [0, 1]
