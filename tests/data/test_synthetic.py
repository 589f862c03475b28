"""The synthetic generator: the real layout and types, consistency between files, determinism (pinned
fingerprints), the root's marker and its create-once safety across processes, events of every type in both target
days, behaviour overrides, and (on `small`) the statistics of docs/data.md and the structure models should find."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.cli import main as data_cli
from yambda_dl.data.layout import DatasetLayout, default_cache_dir
from yambda_dl.data.protocol import GAP, LAST_TIMESTAMP, LISTEN_PLUS_MIN_RATIO, TEST_START, VALIDATION_START
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.data.stats import compute_stats
from yambda_dl.data.synthetic import (
    MARKER_FILE,
    PRESETS,
    VERSION,
    Behaviour,
    SynthConfig,
    generate,
    guarantee,
    parse_overrides,
    resolve_config,
)
from yambda_dl.data.synthetic.catalogue import build_catalogue
from yambda_dl.data.synthetic.feedback import feedback
from yambda_dl.data.synthetic.sampling import rng
from yambda_dl.data.synthetic.sessions import generate_listens
from yambda_dl.data.synthetic.users import make_users

TRAIN_END = TEST_START - GAP
# target days and the end of each one's train window (docs/protocol.md)
TARGET_DAYS = {
    "validation": (VALIDATION_START, TEST_START - GAP, VALIDATION_START - GAP),
    "test": (TEST_START, LAST_TIMESTAMP + 1, TEST_START - GAP),
}


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> DatasetLayout:
    root = tmp_path_factory.mktemp("tiny")
    generate("tiny", root, seed=0, progress=False)
    return DatasetLayout(root, "tiny")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> DatasetLayout:
    root = tmp_path_factory.mktemp("small")
    generate("small", root, seed=0, progress=False)
    return DatasetLayout(root, "small")


def read_flat(layout: DatasetLayout, event_file: str) -> pa.Table:
    return pa.concat_tables(io.iter_flat_batches(layout.event_path(event_file, "flat"), event_file))


def read_sequential(layout: DatasetLayout, event_file: str) -> pa.Table:
    path = layout.event_path(event_file, "sequential")
    return pa.concat_tables(io.iter_sequential_batches(path, event_file))


def read_all(root: Path) -> dict[str, pa.Table]:
    return {str(p.relative_to(root)): pq.read_table(p) for p in sorted(root.rglob("*.parquet"))}


def _hash_array(h: hashlib._Hash, array: pa.Array | pa.ChunkedArray) -> None:
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if pa.types.is_list(array.type):
        h.update(np.asarray(array.value_lengths().fill_null(0), np.int64).tobytes())
        _hash_array(h, array.flatten())
    elif pa.types.is_string(array.type):
        h.update("\0".join(array.fill_null("").to_pylist()).encode())
    else:
        h.update(np.asarray(array.is_null(), bool).tobytes())
        h.update(np.ascontiguousarray(array.fill_null(0).to_numpy(zero_copy_only=False)).tobytes())


def content_fingerprint(root: Path) -> str:
    """A hash of every Parquet file's values (not its bytes: a new pyarrow may encode the same data otherwise)."""
    h = hashlib.sha256()
    for path in sorted(root.rglob("*.parquet")):
        table = pq.read_table(path)
        h.update(str(path.relative_to(root)).encode())
        for name in table.column_names:
            h.update(name.encode())
            _hash_array(h, table.column(name))
    return h.hexdigest()[:16]


def uncovered(root: Path, name: str) -> list[str]:
    """The (event kind, target day) pairs that no user covers: an event of the kind in the day, by a user with one
    in that day's train window (so the split can evaluate a setup built on it). Listens count when Listen+."""
    out = []
    layout = DatasetLayout(root, name)
    for kind in guarantee.KINDS:
        table = read_flat(layout, kind)
        uid, ts = table.column("uid").to_numpy(), table.column("timestamp").to_numpy().astype(np.int64)
        if kind == "listens":
            plus = table.column("played_ratio_pct").to_numpy() >= LISTEN_PLUS_MIN_RATIO
            uid, ts = uid[plus], ts[plus]
        for day, (lo, hi, train_end) in TARGET_DAYS.items():
            if not np.isin(uid[(ts >= lo) & (ts < hi)], uid[ts < train_end]).any():
                out.append(f"{kind} in the {day} day")
    return out


# --- layout, types and consistency on `tiny` ------------------------------------------------------------------


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
def test_event_files_have_the_official_schema(tiny: DatasetLayout, event_file: str) -> None:
    for fmt, expected in (("flat", S.flat_schema(event_file)), ("sequential", S.sequential_schema(event_file))):
        written = pq.read_schema(tiny.event_path(event_file, fmt))
        assert written.names == expected.names
        assert [f.type for f in written] == [f.type for f in expected]
    assert read_flat(tiny, event_file).num_rows > 0


def test_side_files_have_the_official_schema(tiny: DatasetLayout) -> None:
    for path, expected in (
        (tiny.embeddings_path, S.EMBEDDINGS_SCHEMA),
        (tiny.artist_mapping_path, S.ARTIST_MAPPING_SCHEMA),
        (tiny.album_mapping_path, S.ALBUM_MAPPING_SCHEMA),
    ):
        table = io.read_table(path, expected)
        assert table.num_rows > 0 and table.schema.names == expected.names


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
def test_flat_and_sequential_hold_the_same_events(tiny: DatasetLayout, event_file: str) -> None:
    assert read_flat(tiny, event_file).equals(read_sequential(tiny, event_file))


def test_multi_event_is_the_union_of_the_five_files(tiny: DatasetLayout) -> None:
    multi = read_flat(tiny, "multi_event")
    kinds = multi.column("event_type").to_pylist()
    assert multi.num_rows == sum(read_flat(tiny, f).num_rows for f in S.EVENT_TYPE_OF_FILE)
    for event_file, kind in S.EVENT_TYPE_OF_FILE.items():
        part = read_flat(tiny, event_file)
        rows = multi.filter(pa.array([k == kind for k in kinds]))
        assert all(rows.column(c).equals(part.column(c)) for c in part.column_names), event_file
        listen_columns_null = [rows.column(c).null_count == rows.num_rows for c in S.LISTEN_COLUMNS]
        assert all(listen_columns_null) == (kind != "listen")


@pytest.mark.parametrize("event_file", S.EVENT_FILES)
def test_flat_files_sorted_with_timestamps_on_the_axis(tiny: DatasetLayout, event_file: str) -> None:
    table = read_flat(tiny, event_file)
    uid = table.column("uid").to_numpy().astype(np.int64)
    ts = table.column("timestamp").to_numpy().astype(np.int64)
    assert np.all((np.diff(uid) > 0) | ((np.diff(uid) == 0) & (np.diff(ts) >= 0)))
    assert np.all(ts % 5 == 0) and ts.min() >= 0 and ts.max() < S.LAST_TIMESTAMP


def _first_time_of_pairs(table: pa.Table) -> dict[tuple[int, int], int]:
    first: dict[tuple[int, int], int] = {}
    for uid, item, ts in zip(*(table.column(c).to_pylist() for c in ("uid", "item_id", "timestamp")), strict=True):
        first[uid, item] = min(ts, first.get((uid, item), ts))
    return first


@pytest.mark.parametrize(("undo", "done"), [("unlikes", "likes"), ("undislikes", "dislikes")])
def test_undo_events_follow_the_event_they_undo(tiny: DatasetLayout, undo: str, done: str) -> None:
    first_done = _first_time_of_pairs(read_flat(tiny, done))
    undone = read_flat(tiny, undo)
    assert undone.num_rows > 0
    for uid, item, ts in zip(*(undone.column(c).to_pylist() for c in ("uid", "item_id", "timestamp")), strict=True):
        assert (uid, item) in first_done and first_done[uid, item] < ts


def test_ids_are_sparse_and_embeddings_unit_norm(tiny: DatasetLayout) -> None:
    multi = read_flat(tiny, "multi_event")
    uid, item = multi.column("uid").to_numpy(), multi.column("item_id").to_numpy()
    assert uid.max() < 1_000_000 and item.min() >= 1 and item.max() <= 9_390_623
    assert np.unique(uid).size == PRESETS["tiny"].n_users
    embeddings = io.read_table(tiny.embeddings_path, S.EMBEDDINGS_SCHEMA)
    unit = np.stack(embeddings.column("normalized_embed").to_numpy(zero_copy_only=False))
    assert unit.shape[1] == S.EMBEDDING_DIM
    np.testing.assert_allclose(np.linalg.norm(unit, axis=1), 1.0, rtol=1e-5)
    assert 0.75 < embeddings.num_rows / PRESETS["tiny"].n_items < 0.89  # 82% of the catalogue
    artists = io.read_table(tiny.artist_mapping_path, S.ARTIST_MAPPING_SCHEMA)
    assert set(np.unique(item)) <= set(artists.column("item_id").to_numpy())


def test_same_seed_same_data_other_seed_other_data(tiny: DatasetLayout, tmp_path: Path) -> None:
    generate("tiny", tmp_path / "again", seed=0, progress=False)
    generate("tiny", tmp_path / "other", seed=1, progress=False)
    first, again, other = read_all(tiny.root), read_all(tmp_path / "again"), read_all(tmp_path / "other")
    assert first.keys() == again.keys() and len(first) == 15
    assert all(first[name].equals(again[name]) for name in first)
    assert not first["flat/tiny/listens.parquet"].equals(other["flat/tiny/listens.parquet"])


def test_root_holds_one_dataset(tiny: DatasetLayout) -> None:
    other = dataclasses.replace(PRESETS["tiny"], name="tiny2")
    with pytest.raises(ValueError, match=r"holds synthetic dataset 'tiny'.*refusing to write 'tiny2'"):
        generate(other, tiny.root, progress=False)
    with pytest.raises(ValueError, match=r"seed 0.*seed 7"):
        generate("tiny", tiny.root, seed=7, progress=False)


def test_regenerating_the_same_dataset_is_a_no_op(tiny: DatasetLayout) -> None:
    listens = tiny.event_path("listens")
    before = listens.stat().st_mtime_ns
    summary = generate("tiny", tiny.root, seed=0, progress=False)
    assert listens.stat().st_mtime_ns == before
    assert summary.rows["listens"] == pq.ParquetFile(listens).metadata.num_rows
    assert summary.users == PRESETS["tiny"].n_users


def test_a_dataset_from_an_older_generator_is_regenerated(tmp_path: Path) -> None:
    generate("tiny", tmp_path, progress=False)
    marker = tmp_path / MARKER_FILE
    held = json.loads(marker.read_text())
    marker.write_text(json.dumps({**held, "version": VERSION - 1}))
    listens = DatasetLayout(tmp_path, "tiny").event_path("listens")
    listens.write_bytes(b"stale")  # what the old generator left: replaced, not read
    (default_cache_dir(tmp_path) / "0123456789abcdef").mkdir(parents=True)  # a split of the old files
    generate("tiny", tmp_path, progress=False)
    assert not default_cache_dir(tmp_path).exists()
    assert json.loads(marker.read_text())["version"] == VERSION
    assert pq.ParquetFile(listens).metadata.num_rows == held["summary"]["rows"]["listens"]


def test_refuses_a_root_with_files_it_did_not_write(tmp_path: Path) -> None:
    (tmp_path / S.EMBEDDINGS_FILE).write_bytes(b"")
    with pytest.raises(ValueError, match="not made by the generator"):
        generate("tiny", tmp_path, progress=False)
    assert not (tmp_path / MARKER_FILE).exists()


def test_unknown_preset_names_the_choices(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="valid choices: tiny, small, 50m"):
        generate("huge", tmp_path)


def test_a_custom_config_names_its_dataset(tmp_path: Path) -> None:
    cfg = SynthConfig("mini", n_users=5, n_items=100, median_listens=20, n_genres=2, batch_users=2)
    summary = generate(cfg, tmp_path, progress=False)
    assert summary.users == 5 and DatasetLayout(tmp_path, "mini").has("multi_event", "sequential")


# --- pinned data: a change to what the generator writes must be deliberate (and bump VERSION) ------------------

# tiny, seed 0, generator version 4. Version 2 wrote 1a6ba3c24a592bee, whose validation day had no like, dislike,
# unlike or undislike; version 3's guarantee added them (fe4dd934b1e64253); version 4 adds new releases, and with
# new_releases=0 writes exactly version 3's data.
TINY_SEED0 = "d80481afcaddefcd"
TINY_SEED0_V3 = "fe4dd934b1e64253"
# a dataset whose batches cover both target days by themselves, so the guarantee adds nothing: generator version 2
# (with the same two behaviour values set through its module constants) wrote exactly these values
MID = SynthConfig(
    "mid",
    n_users=48,
    n_items=3_000,
    median_listens=1_500,
    n_genres=6,
    batch_users=24,
    behaviour=Behaviour(dislikes_per_listen=0.02, undislikes=0.5),
)
MID_SEED0 = "0e5bee8bd24f439f"  # version 4; with new_releases=0, version 2's f6883f85a1a01837
SMALL_SEED0 = "f84d946aa85aeb31"  # the demo's dataset, generator version 4 (versions 2 and 3: 70bed4cf60dc48b3)


def test_tiny_is_the_pinned_data(tiny: DatasetLayout) -> None:
    assert content_fingerprint(tiny.root) == TINY_SEED0


def test_data_the_guarantee_leaves_alone_is_what_version_2_wrote(tmp_path: Path) -> None:
    generate(MID, tmp_path, progress=False)
    assert uncovered(tmp_path, "mid") == []
    assert content_fingerprint(tmp_path) == MID_SEED0
    without = dataclasses.replace(MID, behaviour=dataclasses.replace(MID.behaviour, new_releases=0.0))
    generate(without, tmp_path / "v2", progress=False)
    assert content_fingerprint(tmp_path / "v2") == "f6883f85a1a01837"


def test_without_new_releases_version_4_writes_version_3s_data(tmp_path: Path) -> None:
    generate("tiny", tmp_path, progress=False, overrides={"new_releases": 0.0})
    assert content_fingerprint(tmp_path) == TINY_SEED0_V3


def test_new_releases_are_first_heard_in_their_last_days_and_have_vectors(tmp_path: Path) -> None:
    """Releases (the catalogue's release_day > 0) are heard only from their release day on, each has a vector, and
    some test-day targets are on items without a train event; without releases the generator has none of them."""
    from yambda_dl.data.synthetic.config import N_DAYS

    cfg = resolve_config("tiny", {"new_releases": 0.05, "release_days": 3})
    generate(cfg, tmp_path, progress=False)
    catalogue = build_catalogue(cfg, rng(0, 0))
    released = np.flatnonzero(catalogue.release_day > 0)
    assert len(released) == round(0.05 * cfg.n_items)
    assert set(catalogue.release_day[released].tolist()) <= {N_DAYS - 1, N_DAYS - 2, N_DAYS - 3}
    layout = DatasetLayout(tmp_path, "tiny")
    events = pq.read_table(layout.event_path("multi_event"), columns=["timestamp", "item_id"]).to_pydict()
    day_of_release = dict(
        zip(catalogue.item_ids[released].tolist(), catalogue.release_day[released].tolist(), strict=True)
    )
    first_second = {item: LAST_TIMESTAMP - (N_DAYS - day) * 86_400 for item, day in day_of_release.items()}
    heard = [
        (ts, item) for ts, item in zip(events["timestamp"], events["item_id"], strict=True) if item in first_second
    ]
    assert heard and all(ts >= first_second[item] for ts, item in heard)
    with_vectors = set(pq.read_table(layout.embeddings_path, columns=["item_id"]).column(0).to_pylist())
    assert set(day_of_release) <= with_vectors
    stats = compute_stats(layout)
    assert 0.0 < stats["test_targets.cold_item_share"] < 1.0
    assert 0.0 < stats["test_targets.cold_with_vector"] <= 1.0


# --- events of every type in both target days ---------------------------------------------------------------


@pytest.mark.parametrize("seed", range(20))
def test_tiny_has_every_event_type_in_both_target_days(tmp_path: Path, seed: int) -> None:
    generate("tiny", tmp_path, seed=seed, progress=False)
    assert uncovered(tmp_path, "tiny") == []


@pytest.mark.parametrize("setup", ["like", "listen_plus"])
def test_tiny_splits_in_tune_mode(tiny: DatasetLayout, tmp_path: Path, setup: str) -> None:
    split = make_split(tiny, Protocol(setup=setup, mode="tune"), cache_dir=tmp_path, progress=False)
    assert split.targets.num_users > 0


def _batch(preset: str, n_users: int) -> tuple:
    """A real batch of a preset's users (its catalogue, users, listens and feedback), as the writer makes it."""
    cfg = PRESETS[preset]
    cat = build_catalogue(cfg, rng(0, 0))
    gen = rng(0, 2, 0)
    users = make_users(cfg, cat, gen, n_users)
    listens = generate_listens(cat, users, cfg.behaviour, gen)
    return cat, users, listens, feedback(listens, users, cfg.behaviour, gen)


@pytest.mark.parametrize("preset", ["small", "50m"])
def test_the_guarantee_covers_both_days_from_a_batch_of_any_preset(preset: str) -> None:
    cat, users, listens, events = _batch(preset, n_users=3)
    nothing = np.zeros((len(guarantee.KINDS), len(guarantee.WINDOWS)), bool)
    users2, listens2, events2 = guarantee.complete(cat, users, listens, events, nothing, rng(0, 6))
    assert guarantee.coverage(users2, listens2, events2).all()
    key = listens2.user.astype(np.int64) * 2**32 + listens2.timestamp
    assert np.all(np.diff(key) >= 0) and np.all(listens2.timestamp % 5 == 0)  # still in (user, time) order
    # a batch whose dataset is already covered is left exactly as it was
    assert guarantee.complete(cat, users, listens, events, ~nothing, rng(0, 6)) == (users, listens, events)


def test_a_last_batch_of_users_without_listens_still_gets_every_type(tmp_path: Path) -> None:
    cfg = resolve_config("tiny", {"name": "silent", "n_users": 3, "batch_users": 2, "no_listens": 1.0})
    generate(cfg, tmp_path, progress=False)
    assert uncovered(tmp_path, "silent") == []


# --- behaviour overrides ------------------------------------------------------------------------------------


def test_overrides_are_typed_and_validated() -> None:
    parsed = parse_overrides(["restart=0.4", "n_users=2000", "favourite_tracks=5,20,100", "name=big"])
    assert parsed == {"restart": 0.4, "n_users": 2000, "favourite_tracks": (5, 20, 100), "name": "big"}
    cfg = resolve_config("small", parsed)
    assert (cfg.name, cfg.n_users, cfg.behaviour.restart, cfg.n_items) == ("big", 2000, 0.4, 200_000)
    assert cfg.overrides() == {"restart": 0.4, "favourite_tracks": (5, 20, 100)}
    with pytest.raises(ValueError, match=r"unknown setting 'restrat'; valid names: name, n_users, .*restart"):
        parse_overrides(["restrat=0.4"])
    with pytest.raises(ValueError, match=r"--set n_users=1.5: expected an integer"):
        parse_overrides(["n_users=1.5"])
    with pytest.raises(ValueError, match=r"expected NAME=VALUE"):
        parse_overrides(["restart"])
    with pytest.raises(ValueError, match=r"restart=1.5 must lie in \[0, 1\]"):
        resolve_config("tiny", parse_overrides(["restart=1.5"]))
    with pytest.raises(ValueError, match=r"ratio_organic=.* summing to 1"):
        resolve_config("tiny", parse_overrides(["ratio_organic=0.5,0.5,0.5,0"]))
    with pytest.raises(ValueError, match=r"n_users=0 .*must be positive"):
        resolve_config("tiny", {"n_users": 0})


def test_an_override_makes_another_dataset_that_the_cli_regenerates(tmp_path: Path) -> None:
    summary = generate("tiny", tmp_path / "a", progress=False, overrides={"likes_per_listen": 0.1})
    plain = generate("tiny", tmp_path / "b", progress=False)
    assert summary.rows["likes"] > 2 * plain.rows["likes"]
    marker = json.loads((tmp_path / "a" / MARKER_FILE).read_text())
    assert marker["overrides"] == {"likes_per_listen": 0.1}
    with pytest.raises(ValueError, match=r"holds synthetic dataset 'tiny'.*overrides.*refusing"):
        generate("tiny", tmp_path / "a", progress=False)
    # the marker's own `yambda-data synth` arguments regenerate it: the same data again
    assert marker["synth_args"] == "--preset tiny --seed 0 --set likes_per_listen=0.1"
    assert data_cli(["synth", *marker["synth_args"].split(), "--root", str(tmp_path / "c")]) == 0
    assert content_fingerprint(tmp_path / "c") == content_fingerprint(tmp_path / "a")


def test_the_cli_refuses_an_unknown_setting_in_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    assert data_cli(["synth", "--preset", "tiny", "--root", str(tmp_path / "x"), "--set", "restrat=0.4"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "unknown setting 'restrat'; valid names: name, n_users" in err
    assert not (tmp_path / "x").exists()


# --- the root: created once, never replaced under a reader, repaired when damaged -----------------------------

_WORKER = """
import hashlib, logging, sys, time
from pathlib import Path
from yambda_dl.data.synthetic import generate

logging.basicConfig(level=logging.INFO, format="%(message)s")
root, go, ready = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
ready.touch()
while not go.exists():  # every worker calls generate at the same moment
    time.sleep(0.002)
summary = generate("tiny", root, seed=0)
listens = (root / "flat" / "tiny" / "listens.parquet").read_bytes()
print(summary.rows["multi_event"], hashlib.sha256(listens).hexdigest())
"""


def test_concurrent_first_use_generates_once(tmp_path: Path) -> None:
    root, go = tmp_path / "data" / "synthetic_tiny", tmp_path / "go"
    workers = [
        subprocess.Popen(
            [sys.executable, "-c", _WORKER, str(root), str(go), str(tmp_path / f"ready{i}")],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        for i in range(4)
    ]
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(4)) and time.monotonic() < deadline:
        time.sleep(0.01)
    go.touch()
    results = [w.communicate(timeout=300) for w in workers]
    assert [w.returncode for w in workers] == [0] * 4, [err for _, err in results]
    assert len({out for out, _ in results}) == 1  # the same rows and the same bytes for everyone
    generated = [err for _, err in results if "items -> " in err]
    assert len(generated) == 1, [err for _, err in results]
    assert sorted(p.name for p in root.parent.iterdir()) == ["synthetic_tiny"]  # no lock or temporary left
    assert content_fingerprint(root) == TINY_SEED0


def test_a_missing_file_in_a_finished_root_is_regenerated(tmp_path: Path) -> None:
    generate("tiny", tmp_path, seed=3, progress=False)
    before = content_fingerprint(tmp_path)
    layout = DatasetLayout(tmp_path, "tiny")
    layout.event_path("likes", "sequential").unlink()
    with pytest.raises(io.DataFileError, match=r"yambda-data synth --preset tiny --root .* --seed 3"):
        layout.require(["likes"], "sequential")
    assert data_cli(["synth", "--preset", "tiny", "--root", str(tmp_path), "--seed", "3"]) == 0
    assert layout.has("likes", "sequential") and content_fingerprint(tmp_path) == before


def test_a_root_with_other_files_is_refused_and_left_alone(tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("mine")
    for overwrite in (False, True):
        with pytest.raises(ValueError, match=r"already holds files not made by the generator .*notes\.txt"):
            generate("tiny", tmp_path, progress=False, overwrite=overwrite)
    assert [p.name for p in tmp_path.iterdir()] == ["notes.txt"]


# --- docs/data.md's statistics on `small` -------------------------------------------------------------------

STAT_RANGES = {
    "listen_plus_share": (0.55, 0.70),
    "listen_plus_share.recommended": (0.64, 0.74),
    "listen_plus_share.organic": (0.53, 0.64),
    "top1pct_listen_share": (0.35, 0.75),
    "items_heard_once": (0.2, 0.45),
    "played_ratio.zero": (0.05, 0.10),
    "played_ratio.0_4": (0.20, 0.28),
    "played_ratio.95_100": (0.52, 0.62),
    "played_ratio.101_159": (0.002, 0.01),
    "likes_per_1000_listens": (17, 21),
    "dislikes_per_1000_listens": (2.0, 2.6),
    "recommended_share.listens": (0.46, 0.52),
    "recommended_share.likes": (0.38, 0.46),
    "recommended_share.unlikes": (0.02, 0.08),
    "recommended_share.dislikes": (0.43, 0.53),
    "recommended_share.undislikes": (0.06, 0.14),
    # Listen+ test targets: recommended listens are 49% of listens and Listen+ more often (68% vs 59%): ~52.5%
    "test_targets.recommended_share": (0.48, 0.58),
    "equal_timestamp_share": (0.08, 0.16),
    "users_without_listens": (0.05, 0.12),
    "last_day_listen_plus_users": (0.38, 0.54),
    "last_day_listen_plus_per_user": (20, 45),
    "active_days_mean": (60, 120),
    "track_length.median": (185, 215),
    "track_length.p90": (250, 300),
    "multi_event.duplicate_share": (0.003, 0.008),
    "listens.per_user_median": (1_800, 3_200),
    # test targets on items without a train event: 1.5% from the long tail alone, ~2.8% with the new releases
    "test_targets.cold_item_share": (0.02, 0.05),
}


@pytest.mark.slow
def test_small_is_the_pinned_data_and_covers_both_days_by_itself(small: DatasetLayout) -> None:
    assert uncovered(small.root, "small") == []
    assert content_fingerprint(small.root) == SMALL_SEED0


@pytest.fixture(scope="module")
def small_stats(small: DatasetLayout) -> dict:
    return compute_stats(small)


@pytest.mark.slow
def test_small_reproduces_the_yambda_statistics(small: DatasetLayout, small_stats: dict) -> None:
    stats = small_stats
    outside = {k: (stats[k], r) for k, r in STAT_RANGES.items() if not r[0] <= stats[k] <= r[1]}
    assert not outside
    assert stats["multi_event.users"] == PRESETS["small"].n_users
    assert 3_000_000 <= stats["listens.rows"] <= 5_000_000


@pytest.mark.slow
def test_small_recommended_targets_are_on_what_is_popular_now(small_stats: dict) -> None:
    """Recommended runs open on the week's hits: their test targets sit on the train window's recent top items far more
    often than organic ones (favourites, artist runs, the long tail), which a recency-aware popularity model sees.
    (All-time popularity does not tell them apart: a user's favourites are often all-time hits.)"""
    organic = small_stats["test_targets.recent_top100.organic"]
    recommended = small_stats["test_targets.recent_top100.recommended"]
    assert recommended > 2 * organic and recommended > organic + 0.15


def _listen_plus(layout: DatasetLayout) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    table = read_flat(layout, "listens")
    table = table.filter(pc.greater_equal(table.column("played_ratio_pct"), 50))
    return tuple(table.column(c).to_numpy().astype(np.int64) for c in ("uid", "timestamp", "item_id"))


def _hit_rate_at_10(scores: np.ndarray, target_user: np.ndarray, target_item: np.ndarray) -> float:
    top10 = np.argsort(-scores, kind="stable")[:10]
    hit_users = np.unique(target_user[np.isin(target_item, top10)])
    return hit_users.size / np.unique(target_user).size


@pytest.mark.slow
def test_small_decaying_popularity_beats_all_time_popularity(small: DatasetLayout) -> None:
    uid, ts, item = _listen_plus(small)
    _, dense = np.unique(item, return_inverse=True)
    train, test = ts < TRAIN_END, ts >= TEST_START
    all_time = np.bincount(dense[train], minlength=dense.max() + 1).astype(np.float64)
    age_hours = (ts[train].max() - ts[train]) / 3_600
    decayed = np.bincount(dense[train], weights=0.9 ** (age_hours / 24), minlength=dense.max() + 1)
    most_pop = _hit_rate_at_10(all_time, uid[test], dense[test])
    decay_pop = _hit_rate_at_10(decayed, uid[test], dense[test])
    assert decay_pop > most_pop + 0.05


@pytest.mark.slow
def test_small_previous_artist_predicts_the_next(small: DatasetLayout) -> None:
    listens = read_flat(small, "listens")
    mapping = io.read_table(small.artist_mapping_path, S.ARTIST_MAPPING_SCHEMA)
    order = np.argsort(mapping.column("item_id").to_numpy())
    mapped_items = mapping.column("item_id").to_numpy()[order]
    item = listens.column("item_id").to_numpy()
    artist = mapping.column("artist_id").to_numpy()[order][np.searchsorted(mapped_items, item)]
    uid = listens.column("uid").to_numpy()
    same_user = uid[1:] == uid[:-1]
    same_artist = np.mean(artist[1:][same_user] == artist[:-1][same_user])
    _, counts = np.unique(artist, return_counts=True)
    chance = np.sum((counts / counts.sum()) ** 2)  # two independent listens sharing an artist
    assert same_artist > 10 * chance and same_artist > 0.15
