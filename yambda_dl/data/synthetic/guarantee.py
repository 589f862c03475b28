"""Events of every type in both target days, for any size and seed.

Evaluation needs, in the final test day and in the validation day of tune mode (docs/protocol.md), events of each
setup's source: Listen+ listens and likes, and a researcher may build a setup on dislikes, unlikes or undislikes.
A small dataset (the `tiny` preset) has so few feedback events that a target day often has none, so the split
refuses it. The writer tracks, batch after batch, which (event kind, target day) pairs some user covers: an event
of that kind in the day, by a user who also has one in that day's train window (so the user is evaluated). If a
pair is still uncovered when the last batch is generated, one user of that batch (a "witness") gets a short
session in the train window and one in each uncovered day: four listens, of which three full plays, with a like
and an unlike of one track and a dislike and an undislike of a skipped one. Its random numbers come from their own
stream, so a dataset that covers every pair by itself is written exactly as if this module did not exist.
"""

from __future__ import annotations

import dataclasses

import numpy as np

from yambda_dl.data.protocol import (
    DAY,
    GAP,
    LAST_TIMESTAMP,
    LISTEN_PLUS_MIN_RATIO,
    TEST_START,
    TIMESTAMP_STEP,
    VALIDATION_START,
)
from yambda_dl.data.synthetic.catalogue import Catalogue
from yambda_dl.data.synthetic.config import N_DAYS
from yambda_dl.data.synthetic.feedback import FEEDBACK_FILES, Events
from yambda_dl.data.synthetic.sessions import Listens
from yambda_dl.data.synthetic.users import Users

VALIDATION_END = TEST_START - GAP  # tune mode's target day is [VALIDATION_START, VALIDATION_END)
KINDS = ("listens", *FEEDBACK_FILES)  # listens: Listen+ only
# (first second, end) of each target day and the end of its train window
WINDOWS = {
    "validation": (VALIDATION_START, VALIDATION_END, VALIDATION_START - GAP),
    "test": (TEST_START, LAST_TIMESTAMP + 1, TEST_START - GAP),
}
_LONGEST_GAP = 3_600  # seconds between a session's listens, at most: a session always fits in its day
_TRAIN_SESSION = (VALIDATION_START - GAP - 7 * DAY, VALIDATION_START - GAP)  # the week before the earliest train end


def coverage(users: Users, listens: Listens, feedback: dict[str, Events]) -> np.ndarray:
    """(len(KINDS), len(WINDOWS)) bool: whether a user of this batch covers each (kind, target day) pair."""
    plus = users.listening[listens.user] & (listens.ratio >= LISTEN_PLUS_MIN_RATIO)
    events = {"listens": (listens.user[plus], listens.timestamp[plus])}
    events |= {kind: (cols[0], cols[1]) for kind, cols in feedback.items()}
    out = np.zeros((len(KINDS), len(WINDOWS)), bool)
    for k, kind in enumerate(KINDS):
        user, ts = events[kind]
        ts = ts.astype(np.int64)
        for w, (lo, hi, train_end) in enumerate(WINDOWS.values()):
            inside = user[(ts >= lo) & (ts < hi)]
            out[k, w] = inside.size > 0 and bool(np.isin(inside, user[ts < train_end]).any())
    return out


def complete(
    cat: Catalogue,
    users: Users,
    listens: Listens,
    feedback: dict[str, Events],
    covered: np.ndarray,
    rng: np.random.Generator,
) -> tuple[Users, Listens, dict[str, Events]]:
    """The batch with a witness's sessions added where `covered` (the earlier batches' and this one's) has a gap;
    the batch itself, untouched, when there is none."""
    missing = [w for w in range(len(WINDOWS)) if not covered[:, w].all()]
    if not missing:
        return users, listens, feedback
    # the witness: the batch's busiest listening user (any user, made a listening one, if the batch has none)
    witness = int(np.argmax(np.where(users.listening, users.n_events, -1)))
    spans = [_TRAIN_SESSION] + [list(WINDOWS.values())[w][:2] for w in missing]
    fav = users.fav_tracks[users.fav_track_start[witness] : users.fav_track_start[witness + 1]]
    n_items = len(cat.item_ids)
    parts = []
    for lo, hi in spans:
        liked, full_a, full_b = rng.choice(fav, 3)
        skipped = (liked + 1 + rng.integers(0, max(n_items - 1, 1))) % n_items  # a one-off skip of another track
        item = np.array([liked, skipped, full_a, full_b], np.int64)
        item = cat.before_release(item, np.full(len(item), _day_of(lo)))  # no new release before its release day
        ratio = np.array([100, 0, 100, 100], np.int64)
        played = np.minimum(cat.track_length[item].astype(np.int64) * ratio // 100, _LONGEST_GAP)
        step = (played // TIMESTAMP_STEP + 1) * TIMESTAMP_STEP  # strictly increasing, on the 5-second grid
        offset = np.concatenate([[0], np.cumsum(step)[:-1]])
        room = (hi - 1 - offset[-1] - lo) // TIMESTAMP_STEP
        start = lo + int(rng.integers(0, room)) * TIMESTAMP_STEP
        parts.append((item, ratio, start + offset))
    item = np.concatenate([p[0] for p in parts])
    ratio = np.concatenate([p[1] for p in parts])
    ts = np.concatenate([p[2] for p in parts])
    first = np.arange(0, len(item), 4)  # each session: like, dislike, unlike, undislike at its four listens
    added = {
        "likes": (first, first),
        "dislikes": (first + 1, first + 1),
        "unlikes": (first, first + 2),  # (the pair's listen, the later listen it is taken back at)
        "undislikes": (first + 1, first + 3),
    }
    user = np.full(len(item), witness, np.int64)
    listens = _append_listens(listens, user, ts, item, ratio)
    feedback = dict(feedback)
    for kind, (pair, at) in added.items():
        feedback[kind] = _append(feedback[kind], user[pair], ts[at], item[pair], np.ones(len(pair), bool))
    listening = users.listening.copy()
    listening[witness] = True
    n_events = users.n_events.copy()
    n_events[witness] += len(item)
    return dataclasses.replace(users, listening=listening, n_events=n_events), listens, feedback


def _day_of(second: int) -> int:
    """The calendar day (0 = the oldest, N_DAYS - 1 = the test day; users.day_bounds) of a second."""
    return max(N_DAYS - 1 - (LAST_TIMESTAMP - 1 - int(second)) // DAY, 0)


def _append_listens(listens: Listens, user: np.ndarray, ts: np.ndarray, item: np.ndarray, ratio: np.ndarray) -> Listens:
    """The listens with some appended, back in (user, time) order; equal keys keep their order (stable)."""
    organic = np.ones(len(item), bool)
    cols = _append(
        (listens.user, listens.timestamp, listens.item, listens.organic, listens.ratio), user, ts, item, organic, ratio
    )
    key = (cols[0].astype(np.uint64) << np.uint64(32)) | cols[1].astype(np.uint64)
    order = np.argsort(key, kind="stable")
    return Listens(*(c[order] for c in cols))


def _append(cols: tuple[np.ndarray, ...], *extra: np.ndarray) -> tuple[np.ndarray, ...]:
    """Each column with its extra values appended, in the column's own dtype."""
    return tuple(np.concatenate([c, e.astype(c.dtype)]) for c, e in zip(cols, extra, strict=True))
