"""The streaming evaluation (eval/stream.py) on a hand-made day: the metrics of MostPop and of a tiny SASRec equal a
direct per-window loop written here from the raw rows; one window of 86400 s equals the frozen evaluation for every
model; the states of the other families; the new-user slice; and yambda-train writing metrics.json's "stream"."""

from __future__ import annotations

import json
import math

import lightning
import numpy as np
import pytest
import torch

from yambda_dl.api import build_model
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import Protocol, make_split
from yambda_dl.eval.settings import EvalSettings
from yambda_dl.eval.stream import StreamSettings, stream_evaluate, window_starts
from yambda_dl.models.base import StreamingRecommender, UserEvents
from yambda_dl.models.ials import IALS
from yambda_dl.models.popularity import MostPop
from yambda_dl.retrieval import topk

from ..conftest import TEST_START, listen, optional_model_param, quiet_trainer, write_audio, write_flat
from ..models.sequential.zoo import tiny
from ..test_train import compose_cfg, data_overrides, run_cli

HOUR = 3600
LAST = 26_000_000  # the final day's closing second, part of its last window
KS = (1, 3, 5)
TRAIN_ITEMS = [10, 20, 30, 40, 50, 60, 70, 80]


def day_rows(seed: int = 3) -> list[tuple]:
    """Ten users with train histories, two new users (ids 91, 92) who act only on the test day, items 10..80 in
    train and 99 never in train; day events spread over hours 0..4, and one at the day's closing second."""
    rng = np.random.default_rng(seed)
    rows = []
    for uid in range(1, 11):
        for i, item in enumerate(rng.choice(TRAIN_ITEMS, size=int(rng.integers(2, 7)))):
            rows.append(listen(uid, 1_000_000 + 10 * uid + i, int(item)))
        rows.append(listen(uid, 25_911_000 + uid, TRAIN_ITEMS[uid % 3]))  # recent train events
        for n in range(int(rng.integers(0, 7))):
            hour = int(rng.integers(0, 5))
            item = int(rng.choice([*TRAIN_ITEMS, 99]))
            rows.append(listen(uid, TEST_START + hour * HOUR + 60 * n + uid, item))
    rows.append(listen(1, LAST, 10))  # in the last window, whatever the window length
    for uid in (91, 92):  # no train history
        for n, item in enumerate((30, 40, 30, 99, 50)[: 3 + uid % 2 * 2]):
            rows.append(listen(uid, TEST_START + n * HOUR + 7, item))
    return rows


@pytest.fixture(scope="module")
def day(tmp_path_factory):
    layout = DatasetLayout(tmp_path_factory.mktemp("stream"), "hand")
    rows = day_rows()
    write_flat(layout, "listens", rows)
    write_audio(layout.embeddings_path, [*TRAIN_ITEMS, 99])
    return layout, rows, make_split(layout, Protocol(), progress=False)


# --- the direct loop ---------------------------------------------------------------------------------------------


def by_hand(ranking, rows: list[tuple], window: int) -> dict[str, float]:
    """ndcg, recall and hitrate at KS averaged over (user, window) pairs of ranked users, by a plain loop over windows
    and users from the raw rows. ranking(uid, history, start) -> the user's top max(KS) raw item ids, where history
    is the user's (time, raw item) events of the day before `start`."""
    train_users = {r[0] for r in rows if r[1] < 25_911_800}
    day = sorted((r[0], r[1], r[2]) for r in rows if r[1] >= TEST_START and r[0] in train_users)
    starts = [TEST_START + window * j for j in range(math.ceil(86_400 / window))]
    sums, pairs = {}, 0
    for j, start in enumerate(starts):
        end = starts[j + 1] if j + 1 < len(starts) else LAST + 1
        for uid in sorted(train_users):
            targets = [item for u, t, item in day if u == uid and start <= t < end]
            if not targets:
                continue
            history = [(t, item) for u, t, item in day if u == uid and t < start]
            recs = ranking(uid, history, start)
            pairs += 1
            for k in KS:
                relevant = [item in targets for item in recs[:k]]
                dcg = sum(1 / math.log2(r + 2) for r, hit in enumerate(relevant) if hit)
                n_rel = min(k, len(targets))
                ideal = sum(1 / math.log2(r + 2) for r in range(n_rel))
                for name, value in (
                    ("ndcg", dcg / ideal),
                    ("recall", sum(relevant) / n_rel),
                    ("hitrate", any(relevant)),
                ):
                    sums[f"{name}@{k}"] = sums.get(f"{name}@{k}", 0.0) + float(value)
    return {name: value / pairs for name, value in sums.items()} | {"pairs": pairs}


def assert_same(stream: dict, expected: dict) -> None:
    assert stream["num_pairs"] == expected["pairs"]
    for name, value in expected.items():
        if name != "pairs":
            assert stream["metrics"][name] == pytest.approx(value, abs=1e-12), name


def test_mostpop_stream_equals_a_direct_loop(day):
    _, rows, split = day
    model = MostPop().fit(split)
    train_counts = {item: sum(1 for r in rows if r[1] < 25_911_800 and r[2] == item) for item in TRAIN_ITEMS}

    def ranking(uid, history, start):
        # counts of the train events and of every user's day events before the window, new users' included
        counts = dict(train_counts)
        for r in rows:
            if TEST_START <= r[1] < start and r[2] in counts:
                counts[r[2]] += 1
        return sorted(TRAIN_ITEMS, key=lambda item: (-counts[item], item))[: max(KS)]  # ties: lower id (= index)

    stream = stream_evaluate(model, split, EvalSettings(ks=KS), HOUR)
    assert stream["state"] == "counts up to the window start"
    assert stream["num_windows"] == 24 and stream["window"] == HOUR
    assert_same(stream, by_hand(ranking, rows, HOUR))
    assert stream["metrics"] != EvalSettings(ks=KS).score(EvalSettings(ks=KS).rank(model, split)[0], split)


def test_sasrec_stream_equals_a_direct_loop(day):
    _, rows, split = day
    model = tiny("sasrec", max_len=6, batch_size=4, epochs=3)
    model.fit(split, trainer=quiet_trainer(max_epochs=3, accelerator="cpu", devices=1))
    items = model.item_vectors()
    index = {item: i for i, item in enumerate(TRAIN_ITEMS)}
    train = {}
    for uid, ts, item, *_ in sorted(rows, key=lambda r: (r[0], r[1])):
        if ts < 25_911_800:
            train.setdefault(uid, []).append(index[item])

    def ranking(uid, history, start):
        if not history:  # the frozen state: the model's own user vector over its train events
            vector = model.user_vectors(torch.tensor([split.user_index([uid])[0]]))
        else:  # the whole sequence, train then the day so far, items outside train skipped, newest 6 kept
            sequence = (train[uid] + [index[item] for _, item in history if item in index])[-6:]
            padded = np.array([[-1] * (6 - len(sequence)) + sequence])
            vector = model.encode_sequences(padded)
        _, best = topk(vector, items, max(KS))
        return [TRAIN_ITEMS[i] for i in best[0].tolist()]

    stream = stream_evaluate(model, split, EvalSettings(ks=KS), HOUR)
    assert stream["state"] == "sequence re-encoded with the day's events"
    assert_same(stream, by_hand(ranking, rows, HOUR))


def test_encode_sequences_is_user_vectors_on_the_scoring_rows(day):
    _, _, split = day
    model = tiny("sasrec", max_len=6, batch_size=4, epochs=1)
    model.fit(split, trainer=quiet_trainer(max_epochs=1, accelerator="cpu", devices=1))
    users = torch.arange(split.num_users)
    assert torch.equal(model.encode_sequences(np.asarray(model._scoring)), model.user_vectors(users))


# --- one window is the frozen protocol ----------------------------------------------------------------------------

CHEAP = {
    "random": {},
    "mostpop": {},
    "decaypop": {"hours": 1.0},
    "itemknn": {"hours": 1.0},
    "audio_knn": {"hours": 1.0},
    "ials": {"factors": 8, "iterations": 3},
    "bpr": {"factors": 8, "iterations": 3, "batch_size": 64},
    "sansa": {},
    "sasrec": None,  # the zoo's tiny SASRec
}


def fitted(name: str, split):
    model = (
        tiny("sasrec", max_len=6, batch_size=4, epochs=1) if CHEAP[name] is None else build_model(name, **CHEAP[name])
    )
    trainer = quiet_trainer(max_epochs=getattr(model, "max_epochs", 1), accelerator="cpu", devices=1)
    return model.fit(split, trainer=trainer if isinstance(model, lightning.LightningModule) else None)


def one_window_cases() -> list:
    """Every cheap model with and without the seen-item mask; SANSA (its extra is slow to fit, ~30 s) once, slow."""
    cases = []
    for name in CHEAP:
        param = optional_model_param(name)
        for filter_seen in (False, True) if name != "sansa" else (False,):
            marks = [*param.marks, *([pytest.mark.slow] if name == "sansa" else [])]
            cases.append(pytest.param(name, filter_seen, marks=marks, id=f"{name}-{'seen' if filter_seen else 'all'}"))
    return cases


@pytest.mark.parametrize(("name", "filter_seen"), one_window_cases())
def test_one_window_of_a_day_equals_the_frozen_evaluation(day, name, filter_seen):
    _, _, split = day
    model = fitted(name, split)
    settings = EvalSettings(ks=KS, filter_seen=filter_seen)
    items, _ = settings.rank(model, split)
    frozen = settings.score(items, split)
    stream = stream_evaluate(model, split, settings, 86_400)
    assert stream["num_windows"] == 1
    assert stream["metrics"] == frozen  # every metric, coverage and the user counts included, to the last bit
    assert stream["frozen"] == frozen
    assert stream["num_pairs"] == frozen["num_evaluated_users"]
    assert stream["new_users"] is None  # nobody is ranked before the day's only window
    expected_state = "frozen" if name in ("random", "bpr", "sansa") else stream["state"]
    assert stream["state"] == expected_state and isinstance(model, StreamingRecommender) == (expected_state != "frozen")
    # hourly, the streaming models' metrics move; the frozen ones' lists never change
    hourly = stream_evaluate(model, split, settings, HOUR)
    assert hourly["num_windows"] == 24
    if expected_state == "frozen":
        assert all(w["moved"] == 0 for w in hourly["windows"]) and hourly["new_users"] is None
        assert hourly["metrics"] == hourly["frozen"]  # its lists never move
    else:
        assert sum(w["moved"] for w in hourly["windows"]) > 0 and hourly["new_users"] is not None


def test_windows_cover_the_day_and_its_closing_second():
    starts = window_starts(Protocol(), HOUR)
    assert len(starts) == 24 and starts[0] == TEST_START and starts[-1] == TEST_START + 23 * HOUR
    assert list(window_starts(Protocol(), 86_400)) == [TEST_START]
    assert len(window_starts(Protocol(), 7_000)) == 13  # the last window runs to the end of the day
    assert len(window_starts(Protocol(mode="tune"), HOUR)) == 24


@pytest.mark.parametrize("bad", [0, -5, 1.5, "hourly", True])
def test_a_bad_window_is_refused_naming_the_key(bad):
    with pytest.raises(ValueError, match=r"eval\.stream\.window="):
        StreamSettings.from_config({"stream": {"window": bad}})
    with pytest.raises(ValueError, match=r"eval\.stream\.size is not a setting; valid choices: window"):
        StreamSettings.from_config({"stream": {"size": 3}})


# --- the families' states ------------------------------------------------------------------------------------------


def test_ials_fold_in_is_the_closed_form_solve(day):
    _, rows, split = day
    model = IALS(factors=4, iterations=2, alpha=2.0, regularization=0.5, values="count").fit(split)
    uid = 3
    user = int(split.user_index([uid])[0])
    day_items = [r[2] for r in rows if r[0] == uid and r[1] >= TEST_START and r[2] in TRAIN_ITEMS][:2]
    times = [r[1] for r in rows if r[0] == uid and r[1] >= TEST_START and r[2] in TRAIN_ITEMS][:2]
    events = UserEvents(
        np.array([user, -1]),
        np.array([0, len(day_items), len(day_items) + 1]),
        np.array([*split.item_index(day_items), split.item_index([40])[0]]),
        np.array([*times, TEST_START]),
        TEST_START + 5 * HOUR,
    )
    vectors = model.user_stream(split).updated(events).user_vectors(torch.arange(2)).double().numpy()
    y = model.item_factors.detach().double().numpy()
    for row, counts in enumerate(
        [
            {item: sum(1 for r in rows if r[0] == uid and r[1] < 25_911_800 and r[2] == item) for item in TRAIN_ITEMS},
            {item: int(item == 40) for item in TRAIN_ITEMS},  # a new user: the day's one event only
        ]
    ):
        if row == 0:
            for item in day_items:
                counts[item] += 1
        r = np.array([counts[item] for item in TRAIN_ITEMS], dtype=np.float64)
        c = 1 + 2.0 * r
        p = (r > 0).astype(np.float64)
        a = y.T @ (c[:, None] * y) + 0.5 * np.eye(4)
        assert vectors[row] == pytest.approx(np.linalg.solve(a, y.T @ (c * p)), rel=1e-4, abs=1e-5)


def test_itemknn_profile_moves_to_the_latest_event(day):
    _, rows, split = day
    model = build_model("itemknn", hours=1.0).fit(split)
    stream = model.user_stream(split)
    users = np.arange(split.num_users)
    still = UserEvents(users, np.zeros(len(users) + 1, dtype=np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    frozen = model.recommend(torch.from_numpy(users), 5)
    moved = stream.updated(still).recommend(torch.from_numpy(users), 5)
    assert torch.equal(frozen[0], moved[0])  # without events, the fit's profiles
    # one event an hour after the last train event: the train profile weighs 0.9 of itself, the new item 1
    uid = 2
    user = int(split.user_index([uid])[0])
    last = max(r[1] for r in rows if r[0] == uid and r[1] < 25_911_800)
    item = int(split.item_index([80])[0])
    one = UserEvents(np.array([user]), np.array([0, 1]), np.array([item]), np.array([last + HOUR]), last + 2 * HOUR)
    scores = model._tile_scorer(model._profile_rows(stream.updated(one).profiles))(0, split.num_items)
    expected_profile = model._profiles.select(torch.tensor([user])).torch_sparse().to_dense()[0] * 0.9
    expected_profile[item] += model._item_scale[item]
    expected = model._tile_scorer(model._profile_rows(_dense_csr(expected_profile)))(0, split.num_items)
    assert torch.allclose(scores, expected, rtol=1e-12)


def _dense_csr(row: torch.Tensor):
    from yambda_dl.data.csr import CSR

    columns = torch.nonzero(row).flatten()
    return CSR(torch.tensor([0, len(columns)]), columns, row[columns].double(), (1, len(row)))


def test_audio_knn_vector_moves_toward_the_day_s_items(day):
    *_, split = day
    model = build_model("audio_knn", hours=1.0).fit(split)
    stream = model.user_stream(split)
    users = np.arange(split.num_users)
    still = UserEvents(users, np.zeros(len(users) + 1, dtype=np.int64), np.zeros(0, np.int64), np.zeros(0, np.int64), 0)
    frozen = model.user_vectors(torch.from_numpy(users))
    assert torch.allclose(stream.updated(still).user_vectors(torch.from_numpy(users)), frozen, atol=1e-6)
    user, item = int(split.user_index([4])[0]), int(split.item_index([70])[0])
    target = model.item_vectors()[item]
    one = UserEvents(np.array([user]), np.array([0, 1]), np.array([item]), np.array([TEST_START]), TEST_START + 1)
    moved = stream.updated(one).user_vectors(torch.tensor([0]))[0]
    assert float(moved @ target) > float(frozen[user] @ target)
    assert float(moved.norm()) == pytest.approx(1.0, abs=1e-6)


def test_deduplicated_targets_stream_over_the_whole_window_stream(day):
    layout, _, _ = day
    split = make_split(layout, Protocol(dedup_targets=True), progress=False)
    assert split.window_events.num_targets > split.targets.num_targets  # replays: state events, not targets
    for model in (MostPop().fit(split), IALS(factors=4, iterations=2).fit(split)):
        settings = EvalSettings(ks=KS)
        frozen = settings.score(settings.rank(model, split)[0], split)
        assert stream_evaluate(model, split, settings, 86_400)["metrics"] == frozen
        hourly = stream_evaluate(model, split, settings, HOUR)
        assert hourly["num_pairs"] >= frozen["num_evaluated_users"]


def test_new_users_are_a_slice_of_their_own(day):
    _, rows, split = day
    model = MostPop().fit(split)
    stream = stream_evaluate(model, split, EvalSettings(ks=KS), HOUR)
    new = stream["new_users"]
    # users 91 (events in hours 0..4, item 99 in hour 3: a target outside the candidates) and 92 (hours 0, 1, 2) are
    # ranked from the window after their first event: 91 in hours 1..4, 92 in hours 1 and 2
    assert new["num_pairs"] == 6 and new["num_evaluated_users"] == 2
    assert stream["metrics"]["num_evaluated_users"] == len({r[0] for r in rows if r[1] >= TEST_START} - {91, 92})


# --- periodic refits -----------------------------------------------------------------------------------------------


def test_refitting_mostpop_every_hour_is_its_streaming_state(day):
    _, _, split = day
    settings = EvalSettings(ks=KS)
    plain = stream_evaluate(MostPop().fit(split), split, settings, HOUR)
    refit = stream_evaluate(MostPop().fit(split), split, settings, HOUR, retrain_every=HOUR)
    assert refit["refits"] == 23 and refit["state"].startswith("refit on train + the day so far every 3600 s")
    # counts refit from train + the ranked users' day, plus the new users' events: the same counts as the state's
    assert refit["metrics"] == plain["metrics"] and refit["new_users"] == plain["new_users"]


def test_a_refit_reads_train_and_the_day_so_far(day):
    _, rows, split = day
    from yambda_dl.data.views import user_item_matrix
    from yambda_dl.eval.stream import TrainSoFar

    until = TEST_START + 2 * HOUR
    every = split.window_events
    rows_of = np.repeat(np.arange(every.num_users), np.diff(every.offsets))
    before = every.timestamp < until
    offsets = np.r_[0, np.cumsum(np.bincount(rows_of[before], minlength=every.num_users))]
    events = UserEvents(every.user_idx, offsets, every.item_idx[before], every.timestamp[before], until)
    matrix = user_item_matrix(TrainSoFar(split, events), "count")
    dense = np.zeros(matrix.shape)
    dense[np.repeat(np.arange(matrix.shape[0]), np.diff(matrix.indptr)), matrix.indices] = matrix.values
    expected = np.zeros(matrix.shape)
    for uid, ts, item, *_ in rows:  # train, and ranked users' day events before `until` on train items
        user, column = split.user_index([uid])[0], split.item_index([item])[0]
        if user >= 0 and column >= 0 and (ts < 25_911_800 or TEST_START <= ts < until):
            expected[user, column] += 1
    assert np.array_equal(dense, expected)


@pytest.mark.parametrize("name", ["ials", "bpr"])
def test_cheap_models_refit_during_the_day(day, name):
    _, _, split = day
    model = fitted(name, split)
    before = model.item_factors.detach().clone()
    stream = stream_evaluate(model, split, EvalSettings(ks=KS), HOUR, retrain_every=2 * HOUR)
    assert stream["refits"] == 11  # at 2, 4, ..., 22 hours into the day
    assert not torch.equal(model.item_factors.detach(), before)  # refit in place
    assert [w["moved"] for w in stream["windows"]][2] == split.num_users  # a refit re-ranks everyone
    between = "frozen between refits" if name == "bpr" else "user factor folded in"
    assert between in stream["state"]


def test_refits_are_refused_for_models_that_are_not_cheap():
    with pytest.raises(ValueError, match=r"eval\.stream\.retrain_every is set, but .*ItemKNN is not refit"):
        StreamSettings.from_config(
            {"stream": {"window": HOUR, "retrain_every": HOUR}}, "yambda_dl.models.itemknn.ItemKNN"
        )
    with pytest.raises(ValueError, match=r"build_sequential is not refit"):
        StreamSettings.from_config(
            {"stream": {"window": HOUR, "retrain_every": HOUR}}, "yambda_dl.models.sequential.build_sequential"
        )
    with pytest.raises(ValueError, match=r"retrain_every=3600 needs eval\.stream\.window"):
        StreamSettings.from_config({"stream": {"window": None, "retrain_every": HOUR}})
    assert StreamSettings.from_config({"stream": {"window": HOUR, "retrain_every": HOUR}}, "yambda_dl.models.ials.IALS")


# --- the app -------------------------------------------------------------------------------------------------------


@pytest.mark.slow
def test_yambda_train_writes_the_stream_beside_the_frozen_metrics(day, tmp_path):
    layout, _, _ = day
    out = tmp_path / "run"
    args = ["model=ials", "model.factors=4", "model.iterations=2", "eval.stream.window=3600", "threads=1"]
    run = run_cli([*args, *data_overrides(layout), f"hydra.run.dir={out}", "progress=false"], tmp_path)
    assert run.returncode == 0, run.stderr
    metrics = json.loads((out / "metrics.json").read_text())
    stream = metrics["stream"]
    assert stream["window"] == 3600 and stream["num_windows"] == 24
    assert stream["state"] == "user factor folded in (closed-form solve, item factors fixed)"
    assert (
        set(stream["metrics"]) == set(metrics["metrics"])
        and stream["num_pairs"] > metrics["metrics"]["num_evaluated_users"]
    )
    assert stream["new_users"]["num_evaluated_users"] == 2 and "stream_s" in metrics["timings"]


def test_yambda_train_refuses_a_bad_window_before_any_work(day, tmp_path):
    layout, _, _ = day
    out = tmp_path / "run"
    cfg = compose_cfg(["eval.stream.window=0", *data_overrides(layout), f"hydra.run.dir={out}"], out)
    from yambda_dl.config_check import ConfigError
    from yambda_dl.train import train

    with pytest.raises(ConfigError, match=r"eval\.stream\.window=0"):
        train(cfg)
    refit = ["model=itemknn", "eval.stream.window=3600", "eval.stream.retrain_every=7200"]
    cfg = compose_cfg([*refit, *data_overrides(layout), f"hydra.run.dir={out}"], out)
    with pytest.raises(ConfigError, match=r"ItemKNN is not refit during the day"):
        train(cfg)
    assert not (out / "metrics.json").exists()
