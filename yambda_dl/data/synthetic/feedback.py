"""Feedback events derived from a batch's listens: likes on re-listened (user, item) pairs, dislikes on skipped
one-off listens, unlikes and undislikes at later events of the same pairs."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yambda_dl.data.synthetic.config import Behaviour
from yambda_dl.data.synthetic.sampling import group_starts
from yambda_dl.data.synthetic.sessions import Listens
from yambda_dl.data.synthetic.users import Users

# a feedback file's events as (user, timestamp, item, is_organic) arrays, unsorted
Events = tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
FEEDBACK_FILES = ("likes", "dislikes", "unlikes", "undislikes")


@dataclass(frozen=True)
class _Pairs:
    """(user, item) pairs of a batch's listens: each pair's listens, in time order, as a range of `order`."""

    order: np.ndarray  # listen indices grouped by pair
    start: np.ndarray  # (P + 1,)

    @property
    def count(self) -> np.ndarray:
        return np.diff(self.start)


def _pairs(listens: Listens) -> _Pairs:
    key = (listens.user.astype(np.uint64) << np.uint64(32)) | listens.item.astype(np.uint64)
    order = np.argsort(key, kind="stable")
    return _Pairs(order, group_starts(key[order]))


def _weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices without replacement, with chances proportional to weights (Efraimidis-Spirakis keys)."""
    k = min(k, int((weights > 0).sum()))
    if k == 0:
        return np.zeros(0, np.int64)
    with np.errstate(divide="ignore"):
        keys = np.log(rng.random(len(weights))) / weights
    return np.argpartition(-keys, k - 1)[:k]


def feedback(listens: Listens, users: Users, b: Behaviour, rng: np.random.Generator) -> dict[str, Events]:
    """Likes, dislikes, unlikes and undislikes as (user, timestamp, item, is_organic) arrays, unsorted."""
    pairs = _pairs(listens)
    count = pairs.count
    n = len(listens.user)
    liked = _weighted_sample(count.astype(np.float64), round(b.likes_per_listen * n), rng)
    liked = np.union1d(liked, _top_pair_of_silent_users(listens, users, pairs, liked))
    nth = (rng.random(len(liked)) * np.minimum(count[liked], b.like_among_first)).astype(np.int64)
    first_play = pairs.order[pairs.start[:-1]]
    dislike_w = np.where(listens.ratio[first_play] < 5, 1.0, b.dislike_played) / count.astype(np.float64) ** 2
    dislike_w[liked] = 0.0
    at = {
        "likes": pairs.order[pairs.start[liked] + nth],
        "dislikes": first_play[_weighted_sample(dislike_w, round(b.dislikes_per_listen * n), rng)],
    }
    out = {kind: (listens.user[i], listens.timestamp[i], listens.item[i]) for kind, i in at.items()}
    for kind, of, share in (("unlikes", "likes", b.unlikes), ("undislikes", "dislikes", b.undislikes)):
        undo = at[of][rng.random(len(at[of])) < share]
        later = _later_event(listens, users, undo, rng)
        keep = later >= 0
        out[kind] = (listens.user[undo[keep]], listens.timestamp[later[keep]], listens.item[undo[keep]])
    recommended = {
        "likes": b.recommended_likes,
        "dislikes": b.recommended_dislikes,
        "unlikes": b.recommended_unlikes,
        "undislikes": b.recommended_undislikes,
    }
    return {kind: (*cols, rng.random(len(cols[0])) >= recommended[kind]) for kind, cols in out.items()}


def _top_pair_of_silent_users(listens: Listens, users: Users, pairs: _Pairs, liked: np.ndarray) -> np.ndarray:
    """The most played pair of each user without listens and without a like, so that every user shows up."""
    pair_user = listens.user[pairs.order[pairs.start[:-1]]]
    by_user = np.lexsort((-pairs.count, pair_user))  # each user's most played pair first
    top = by_user[group_starts(pair_user[by_user])[:-1]]
    silent = ~users.listening
    silent[pair_user[liked]] = False
    return top[silent[pair_user[top]]]


def _later_event(listens: Listens, users: Users, at: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each listen index, a random later listen of the same user, strictly later in time; -1 if none."""
    key = (listens.user.astype(np.uint64) << np.uint64(32)) | listens.timestamp.astype(np.uint64)
    lo = np.searchsorted(key, key[at], side="right")
    hi = np.concatenate([[0], np.cumsum(users.n_events)])[listens.user[at] + 1]
    pick = lo + (rng.random(len(at)) * (hi - lo)).astype(np.int64)
    return np.where(lo < hi, pick, -1)
