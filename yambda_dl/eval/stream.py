"""Streaming evaluation (docs/protocol.md, Streaming user state): the test day cut into windows of
`eval.stream.window` seconds; before each window every user's state takes in that user's own events of the day so
far (split.window_events), and the window's targets are scored against it.

The paper freezes every user at the end of train for the whole day: one window of 86400 seconds, where this
evaluation equals the frozen one exactly. A model moves its state without retraining its weights through its
`user_stream` (models/base.py, StreamingRecommender): popularity counts take in every event (a shared state),
sequential models re-encode the extended sequence, iALS folds the events into the user's factor, ItemKNN and
audio_knn update the decayed profile. A model without one is scored frozen, and its result says so.

Ranking metrics average over (user, window) pairs with targets, the ranked users only; coverage@k is the mean over
windows of the share of candidates in the ranked users' top-k at the window's start. Beside them, "frozen" scores
the frozen lists on the same pairs: what the moving state changes, apart from the change of averaging unit (a pair,
not a user, with that window's targets only). "windows" gives each window's pairs, moved users and metrics. Users
without train history who act during the day (split.cold_user_events) are ranked from the window after their first
event on a candidate item and reported apart ("new_users"; its coverage is over the lists they were served), never
in the main average. The final day's closing second (the protocol includes last_timestamp) belongs to the last
window.

Cost: a user is re-ranked only in the windows that follow one where they acted (a shared state re-ranks everyone,
at the cost of a global ranking); every other user keeps the list they hold. The loop is over windows; users and
events are batched. Memory: every ranked user's current top-K (8 bytes x K per user, a copy of the frozen ranking),
the day's events (window_events, targets and new users' events: one day), one window's states and rankings, and
the pairs' top-K rows, streamed and frozen (16 bytes x K per (user, window) pair with targets: where memory grows
with the window count). eval.stream.retrain_every adds the refits: each is the model's own fit on train + the day so
far (its fit's time and memory), read through TrainSoFar, and a ranking of every user.
"""

from __future__ import annotations

import importlib
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from yambda_dl.eval.metrics import catalogue_metrics, ranking_metrics
from yambda_dl.eval.recommend import recommend_all
from yambda_dl.models.base import StreamingRecommender, UserEvents

if TYPE_CHECKING:
    from yambda_dl.data.csr import CSR
    from yambda_dl.data.split import Protocol, Split
    from yambda_dl.eval.settings import EvalSettings

FROZEN = "frozen"  # stream.state of a model that cannot move its state
STREAM_KEYS = ("window", "retrain_every")


@dataclass(frozen=True)
class StreamSettings:
    """train.yaml's eval.stream node: the window in seconds, or None for no streaming evaluation."""

    window: int | None = None
    retrain_every: int | None = None  # refit the cheap models on train + the day so far every this many seconds

    def __post_init__(self) -> None:
        window, every = self.window, self.retrain_every
        if window is not None and not _whole_seconds(window):
            raise ValueError(
                f"eval.stream.window={window!r}: must be null (no streaming evaluation) or whole seconds >= 1, "
                "e.g. 3600 (hourly) or 86400 (one window: the paper's frozen protocol)"
            )
        if every is not None and not _whole_seconds(every):
            raise ValueError(f"eval.stream.retrain_every={every!r}: must be null (no refit) or whole seconds >= 1")
        if every is not None and window is None:
            raise ValueError(f"eval.stream.retrain_every={every} needs eval.stream.window (refits happen at windows)")

    @classmethod
    def from_config(cls, eval_cfg: Mapping[str, Any], model_target: str | None = None) -> StreamSettings:
        """From train.yaml's eval node (no stream node: no streaming evaluation); unknown keys are an error, and so
        is retrain_every for a model (its `_target_`) that is not refit cheaply."""
        node = eval_cfg.get("stream") or {}
        unknown = sorted(set(node) - set(STREAM_KEYS))
        if unknown:
            raise ValueError(f"eval.stream.{unknown[0]} is not a setting; valid choices: {', '.join(STREAM_KEYS)}")
        settings = cls(window=node.get("window"), retrain_every=node.get("retrain_every"))
        if settings.retrain_every is not None and model_target is not None:
            module, _, name = model_target.rpartition(".")
            check_refit(getattr(importlib.import_module(module), name, None), model_target)
        return settings


def _whole_seconds(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1


def check_refit(model: Any, name: object) -> None:
    """Refuse eval.stream.retrain_every for a model (or class) that is not refit cheaply (`cheap_refit`)."""
    if not getattr(model, "cheap_refit", False):
        raise ValueError(
            f"eval.stream.retrain_every is set, but {name} is not refit during the day; the cheap models are "
            "refit (mostpop, decaypop, ials, bpr): set eval.stream.retrain_every=null for this one"
        )


def window_starts(protocol: Protocol, window: int) -> np.ndarray:
    """The windows' start times (int64): ceil(day / window) windows from the target window's start, the last one
    running to its end (the final day's closing second included)."""
    StreamSettings(window)
    count = max(1, -(-protocol.day // window))
    return protocol.windows().target_start + window * np.arange(count, dtype=np.int64)


class _DayEvents:
    """A Targets-form stream of the day (window events, targets, new users' events) with each event's user row and
    window; every query is a vectorized pass over the day's events (one day: bounded)."""

    def __init__(self, events: Any, starts: np.ndarray, window: int) -> None:
        self.user_idx = np.asarray(events.user_idx, dtype=np.int64)
        self.offsets = np.asarray(events.offsets, dtype=np.int64)
        self.item_idx = np.asarray(events.item_idx, dtype=np.int64)
        self.item_id = np.asarray(events.item_id, dtype=np.int64)
        self.timestamp = np.asarray(events.timestamp, dtype=np.int64)
        self.num_users = len(self.user_idx)
        self.row = np.repeat(np.arange(self.num_users, dtype=np.int64), np.diff(self.offsets))
        self.window = np.clip((self.timestamp - starts[0]) // window, 0, len(starts) - 1)

    def active(self, j: int) -> np.ndarray:
        """Rows with an event on a candidate item in window j (ascending)."""
        return np.unique(self.row[(self.window == j) & (self.item_idx >= 0)])

    def ready(self, j: int) -> np.ndarray:
        """Rows with an event on a candidate item before window j (ascending)."""
        return np.unique(self.row[(self.window < j) & (self.item_idx >= 0)])

    def before(self, rows: np.ndarray, j: int, until: int, num_rows: int | None = None, since: int = 0) -> UserEvents:
        """The rows' events in windows since..j-1 (a slice of each row: time order). num_rows: place them at
        user_idx positions of a num_rows-row table instead (rows then must be every row)."""
        skipped = np.bincount(self.row[self.window < since], minlength=self.num_users)[rows]
        counts = np.bincount(self.row[self.window < j], minlength=self.num_users)[rows] - skipped
        indptr = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(counts, out=indptr[1:])
        positions = np.repeat(self.offsets[rows] + skipped - indptr[:-1], counts) + np.arange(indptr[-1])
        users = self.user_idx[rows]
        if num_rows is not None:  # rows ascend with user_idx: the events stay in place, users without any get none
            per_user = np.zeros(num_rows, dtype=np.int64)
            per_user[users] = counts
            indptr = np.zeros(num_rows + 1, dtype=np.int64)
            np.cumsum(per_user, out=indptr[1:])
            users = np.arange(num_rows, dtype=np.int64)
        return UserEvents(users, indptr, self.item_idx[positions], self.timestamp[positions], int(until))

    def in_window(self, j: int, keep: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(rows, offsets, item_idx) of the events in window j (and `keep`), grouped by row in time order."""
        mask = self.window == j
        if keep is not None:
            mask &= keep
        rows = self.row[mask]
        first = np.flatnonzero(np.r_[True, rows[1:] != rows[:-1]]) if len(rows) else np.zeros(0, np.int64)
        return rows[first], np.append(first, len(rows)).astype(np.int64), self.item_idx[mask]

    def first_plays(self) -> np.ndarray:
        """Bool mask of each (row, item) pair's first event of the day (protocol.dedup_targets)."""
        keys = self.row * (1 << 32) + self.item_id
        mask = np.zeros(len(keys), dtype=bool)
        mask[np.unique(keys, return_index=True)[1]] = True
        return mask


def _concat(parts: list[UserEvents], until: int) -> UserEvents:
    """Users of several UserEvents one after another."""
    offsets = [np.zeros(1, dtype=np.int64)]
    total = 0
    for part in parts:
        offsets.append(part.offsets[1:] + total)
        total += int(part.offsets[-1])
    return UserEvents(
        np.concatenate([p.user_idx for p in parts]),
        np.concatenate(offsets),
        np.concatenate([p.item_idx for p in parts]),
        np.concatenate([p.timestamp for p in parts]),
        until,
    )


def _seen_mask(seen: CSR | None, events: UserEvents, num_candidates: int) -> CSR | None:
    """With filter_seen: each user's train items (none for a new user) and the candidates of their day so far."""
    if seen is None:
        return None
    return events.within(num_candidates).matrix(num_candidates, base=seen).with_values(None)


class _SameRanking:
    """A shared state's ranking for users it has no row for (new users): row 0's, under each user's own mask."""

    def __init__(self, model: Any) -> None:
        self.model = model

    def recommend(
        self, user_idx: torch.Tensor, k: int, exclude: CSR | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        return self.model.recommend(torch.zeros_like(torch.as_tensor(user_idx)), k, exclude=exclude)


class TrainSoFar:
    """The split's train events with the ranked users' day events before a time merged in: what a refit reads.

    It answers what the views read of a Split (num_users, num_items, iter_train of the dense columns), so a cheap
    model refits through its own fit(). New users are left out (they have no row in the model); events on items
    outside train are dropped, as train holds none. Memory: the day's events, and one batch with its users' events.
    """

    def __init__(self, split: Split, events: UserEvents) -> None:
        self.split, self.protocol = split, split.protocol
        self.num_users, self.num_items = split.num_users, split.num_items
        events = events.within(split.num_items)
        self._user = events.user_idx[events.rows()]  # ascending: rows ascend with user_idx, whole users
        self._item, self._time = events.item_idx, events.timestamp

    def iter_train(
        self, columns: tuple[str, ...] = ("user_idx", "item_idx", "timestamp"), batch_rows: int | None = None
    ) -> Iterator[dict[str, np.ndarray]]:
        """The split's batches (whole users, sorted by user and time), each with its users' day events."""
        unknown = sorted(set(columns) - {"user_idx", "item_idx", "timestamp"})
        if unknown:
            raise ValueError(f"a refit reads user_idx, item_idx and timestamp only; asked for {unknown}")
        extra = {} if batch_rows is None else {"batch_rows": batch_rows}
        for batch in self.split.iter_train(columns=("user_idx", "item_idx", "timestamp"), **extra):
            users = batch["user_idx"]
            if len(users):  # every user of the day's stream is ranked, so in exactly one batch
                lo = np.searchsorted(self._user, users[0], side="left")
                hi = np.searchsorted(self._user, users[-1], side="right")
                merged = {
                    "user_idx": np.concatenate([users, self._user[lo:hi]]),
                    "item_idx": np.concatenate([batch["item_idx"], self._item[lo:hi]]),
                    "timestamp": np.concatenate([batch["timestamp"], self._time[lo:hi]]),
                }
                order = np.lexsort((merged["timestamp"], merged["user_idx"]))
                batch = {name: values[order] for name, values in merged.items()}
            yield {name: batch[name] for name in columns}


class _Refit:
    """eval.stream.retrain_every: the model refit in place on train + the ranked users' day so far, at the first
    window start at least `every` seconds after the previous refit (the day's start at first)."""

    def __init__(self, model: Any, split: Split, every: int, day_start: int) -> None:
        check_refit(model, type(model).__name__)
        self.model, self.base, self.every, self.last = model, split, every, day_start
        self.split: Split | TrainSoFar = split
        self.count = 0

    def due(self, start: int) -> bool:
        return start - self.last >= self.every

    def run(self, events: UserEvents, start: int) -> None:
        self.split = TrainSoFar(self.base, events)
        if getattr(self.model, "ckpt_path", None) is not None:
            self.model.ckpt_path = None  # a refit starts afresh, never from the run's checkpoint
        self.model.fit(self.split)  # Lightning models: on a quiet one-device CPU Trainer of their own
        self.last, self.count = start, self.count + 1


class _Coverage:
    """For each cut-off, how many ranked users hold each item in their current top-k, moved with the lists; a
    window's coverage is the share of candidates with a count, the metric the mean over windows (with one window,
    the frozen coverage). Memory: 8 bytes per candidate per cut-off."""

    def __init__(self, lists: torch.Tensor, ks: tuple[int, ...], num_items: int) -> None:
        self.ks, self.num_items = ks, num_items
        self.counts = {k: self._count(lists[:, :k]) for k in ks}
        self.sums = dict.fromkeys(ks, 0.0)
        self.windows = 0

    def _count(self, block: torch.Tensor) -> np.ndarray:
        items = block.reshape(-1).numpy()
        return np.bincount(items[items >= 0], minlength=self.num_items)

    def move(self, old: torch.Tensor, new: torch.Tensor) -> None:
        for k in self.ks:
            self.counts[k] += self._count(new[:, :k]) - self._count(old[:, :k])

    def current(self) -> dict[str, float]:
        """The coverage of the lists as they are now."""
        return {f"coverage@{k}": int(np.count_nonzero(self.counts[k])) / self.num_items for k in self.ks}

    def close_window(self) -> None:
        for name, value in zip(self.ks, self.current().values(), strict=True):
            self.sums[name] += value
        self.windows += 1

    def metrics(self) -> dict[str, float]:
        return {f"coverage@{k}": self.sums[k] / self.windows for k in self.ks}


class _Pairs:
    """The (user, window) pairs with targets: their top-K rows and targets, in window then user order."""

    def __init__(self) -> None:
        self.recs: list[torch.Tensor] = []
        self.lengths: list[np.ndarray] = []
        self.items: list[np.ndarray] = []
        self.users: list[np.ndarray] = []

    def add(self, users: np.ndarray, recs: torch.Tensor, offsets: np.ndarray, items: np.ndarray) -> None:
        self.users.append(users)
        self.recs.append(recs)
        self.lengths.append(np.diff(offsets))
        self.items.append(items)

    @property
    def count(self) -> int:
        return int(sum(len(u) for u in self.users))

    def ranking(self, ks: tuple[int, ...], part: slice = slice(None)) -> dict[str, float] | None:
        """The ranking metrics over the pairs (of the windows in `part`), None without any."""
        recs = self.recs[part]
        if not recs or sum(len(r) for r in recs) == 0:
            return None
        lengths = np.concatenate(self.lengths[part])
        offsets = torch.from_numpy(np.r_[0, np.cumsum(lengths)].astype(np.int64))
        items = torch.from_numpy(np.concatenate(self.items[part]))
        return ranking_metrics(torch.cat(recs), offsets, items, ks)

    def distinct_users(self) -> int:
        return len(np.unique(np.concatenate(self.users))) if self.users else 0


def stream_evaluate(
    model: object,
    split: Split,
    settings: EvalSettings,
    window: int,
    items: torch.Tensor | None = None,
    device: str | torch.device | None = None,
    retrain_every: int | None = None,
) -> dict[str, Any]:
    """metrics.json's "stream": the test day in windows of `window` seconds, each scored with the states after the
    day's events before it. `items`: the frozen top-K of every ranked user (settings.rank's), when already ranked.

    Returns {window, num_windows, metrics, num_pairs, frozen, state ("frozen" for a model without user_stream),
    refits, new_users (None without any ranked), windows, seconds}; with one window, metrics and frozen equal
    settings.score's. retrain_every: refit the model in place (a cheap one: check_refit) on train + the ranked users'
    day so far at window starts that many seconds apart; between refits its state moves as without, from the refit.
    """
    started = time.perf_counter()
    run = _Run(model, split, settings, window_starts(split.protocol, window), window, items, device, retrain_every)
    for j, start in enumerate(run.starts.tolist()):
        moved = run.move(j, start) if j else 0
        run.score(j, start, moved)
    return run.result() | {"seconds": round(time.perf_counter() - started, 3)}


class _Run:
    """One streaming evaluation: every ranked user's current list (the frozen one until they act), the new users'
    lists once they are ranked, and the pairs scored so far."""

    def __init__(
        self,
        model: object,
        split: Split,
        settings: EvalSettings,
        starts: np.ndarray,
        window: int,
        items: torch.Tensor | None,
        device: str | torch.device | None,
        retrain_every: int | None,
    ) -> None:
        self.model, self.split, self.settings, self.starts, self.window = model, split, settings, starts, window
        self.device = device
        self.k = settings.ks[-1]
        self.num_candidates = int(getattr(split, "num_candidates", split.num_items))
        self.stream = model.user_stream(split) if isinstance(model, StreamingRecommender) else None
        self.seen = settings.exclude(split)
        self.refit = _Refit(model, split, retrain_every, int(starts[0])) if retrain_every is not None else None
        self.since = 0  # the window of the last refit: the ranked users' events before it are in the model's data
        self.frozen = items if items is not None else settings.rank(model, split, device)[0]
        self.lists = self.frozen.clone()  # a copy: the caller's ranking stays as it is
        self.ranked = _DayEvents(split.window_events, starts, window)
        self.targets = _DayEvents(split.targets, starts, window)
        self.new = _DayEvents(split.cold_user_events, starts, window)
        self.new_targets = self.new.first_plays() if split.protocol.dedup_targets else None
        self.new_lists = torch.full((self.new.num_users, self.k), -1, dtype=torch.int64)
        self.new_ranked = np.zeros(self.new.num_users, dtype=bool)
        self.coverage = _Coverage(self.lists, settings.ks, self.num_candidates)
        self.frozen_coverage = self.coverage.current()
        self.pairs, self.new_pairs, self.frozen_pairs = _Pairs(), _Pairs(), _Pairs()
        self.per_window: list[dict[str, Any]] = []
        self.everyone = np.arange(self.ranked.num_users)

    def rank(self, recommender: object, n: int, events: UserEvents) -> torch.Tensor:
        """Top-K of a recommender's rows 0..n-1 through the shared retrieval; `events`: the rows' day so far, for
        the seen-item mask."""
        if n == 0:
            return torch.zeros((0, self.k), dtype=torch.int64)
        settings = self.settings
        return recommend_all(
            recommender,
            n,
            self.k,
            exclude=_seen_mask(self.seen, events, self.num_candidates),
            batch_users=settings.batch_users,
            backend=settings.backend,
            user_tile=settings.user_tile,
            item_tile=settings.item_tile,
            device=self.device,
        )[0]

    def replace_all(self, fresh: torch.Tensor) -> int:
        self.coverage.move(self.lists, fresh)
        self.lists = fresh
        return self.split.num_users

    def move(self, j: int, start: int) -> int:
        """Move the states to window j's start and re-rank whom they moved; returns how many were re-ranked."""
        moved = 0
        if self.refit is not None and self.refit.due(start):
            moved = self.refit_now(j, start)
            if self.stream is None or not self.stream.shared:
                return moved  # every ranked user was re-ranked by the refit model
        if self.stream is None:
            return moved
        return self.move_shared(j, start) if self.stream.shared else self.move_users(j, start)

    def refit_now(self, j: int, start: int) -> int:
        """Refit on train + the ranked users' day so far; a per-user model's own ranking of everyone, and the new
        users (never in a refit's data) through its state. A shared state ranks everyone in move_shared."""
        self.refit.run(self.ranked.before(self.everyone, j, start), start)
        model = self.model
        self.stream = model.user_stream(self.refit.split) if isinstance(model, StreamingRecommender) else None
        self.since = j
        if self.stream is not None and self.stream.shared:
            return 0
        every = self.ranked.before(self.everyone, j, start, num_rows=self.split.num_users)
        moved = self.replace_all(self.rank(model, self.split.num_users, every))
        if self.stream is not None:
            ready = self.new.ready(j)
            events = self.new.before(ready, j, start)
            self.new_lists[ready] = self.rank(self.stream.updated(events), len(ready), events)
            self.new_ranked[ready] = True
        return moved

    def move_shared(self, j: int, start: int) -> int:
        """Every event moves everyone: rank every ranked user, and the new users who have acted."""
        every = self.ranked.before(self.everyone, j, start, num_rows=self.split.num_users)
        taken = self.ranked.before(self.everyone, j, start, self.split.num_users, self.since) if self.since else every
        state = self.stream.updated(_concat([taken, self.new.before(np.arange(self.new.num_users), j, start)], start))
        moved = self.replace_all(self.rank(state, self.split.num_users, every))
        ready = self.new.ready(j)
        self.new_lists[ready] = self.rank(_SameRanking(state), len(ready), self.new.before(ready, j, start))
        self.new_ranked[ready] = True
        return moved

    def move_users(self, j: int, start: int) -> int:
        """The users who acted in the previous window, ranked and new, with their whole day so far (the ranked
        users' from the last refit on: the model's data holds the rest)."""
        movers, new_movers = self.ranked.active(j - 1), self.new.active(j - 1)
        new_events = self.new.before(new_movers, j, start)
        events = _concat([self.ranked.before(movers, j, start), new_events], start)
        taken = events
        if self.since:
            taken = _concat([self.ranked.before(movers, j, start, since=self.since), new_events], start)
        fresh = self.rank(self.stream.updated(taken), events.num_users, events)
        users = torch.from_numpy(self.ranked.user_idx[movers])
        self.coverage.move(self.lists[users], fresh[: len(movers)])
        self.lists[users] = fresh[: len(movers)]
        self.new_lists[torch.from_numpy(new_movers)] = fresh[len(movers) :]
        self.new_ranked[new_movers] = True
        return events.num_users

    def score(self, j: int, start: int, moved: int) -> None:
        """Window j's pairs against the current lists (and the frozen ones), and its coverage."""
        self.coverage.close_window()
        rows, offsets, items = self.targets.in_window(j)
        users = self.targets.user_idx[rows]
        self.pairs.add(users, self.lists[torch.from_numpy(users)], offsets, items)
        self.frozen_pairs.add(users, self.frozen[torch.from_numpy(users)], offsets, items)
        new = self.new
        keep = self.new_ranked[new.row] if self.new_targets is None else self.new_ranked[new.row] & self.new_targets
        new_rows, new_offsets, new_items = new.in_window(j, keep)
        self.new_pairs.add(new_rows, self.new_lists[torch.from_numpy(new_rows)], new_offsets, new_items)
        scores = self.pairs.ranking(self.settings.ks, slice(j, j + 1))
        self.per_window.append({"start": start, "pairs": len(users), "moved": moved, **(scores or {})})

    def result(self) -> dict[str, Any]:
        ks = self.settings.ks
        counts = {"num_evaluated_users": self.pairs.distinct_users(), "num_ranked_users": int(self.split.num_users)}
        metrics = (self.pairs.ranking(ks) or {}) | self.coverage.metrics() | counts
        # the frozen lists on the same pairs: what the moving state changes, apart from the change of averaging unit
        frozen = (self.frozen_pairs.ranking(ks) or {}) | self.frozen_coverage | counts
        new_metrics = None
        if self.new_pairs.count:
            served = catalogue_metrics(torch.cat(self.new_pairs.recs), self.num_candidates, ks)
            new_metrics = self.new_pairs.ranking(ks) | served
            new_metrics |= {"num_evaluated_users": self.new_pairs.distinct_users(), "num_pairs": self.new_pairs.count}
        return {
            "window": int(self.window),
            "num_windows": len(self.starts),
            "metrics": metrics,
            "num_pairs": self.pairs.count,
            "frozen": frozen,
            "state": _describe(self.stream, self.refit),
            "refits": self.refit.count if self.refit is not None else 0,
            "new_users": new_metrics,
            "windows": self.per_window,
        }


def _describe(stream: Any, refit: _Refit | None) -> str:
    """metrics.json's stream.state: how the state moved, and the refits."""
    state = stream.state if stream is not None else FROZEN
    if refit is None:
        return state
    between = "frozen between refits" if stream is None else f"{state} between refits"
    return f"refit on train + the day so far every {refit.every} s; {between}"
