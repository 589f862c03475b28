"""The listens of one batch of users: calendar -> runs -> items -> played ratio -> timestamps.

Runs of same-artist listening ("restart" mask + forward fill); organic runs anchor on the user's drifting favourite
artists, recommended runs on what is popular now; organic listens also re-listen drifting favourite tracks or explore
the user's genres. Sessions are laid out back to back in their day with 30+ minute gaps.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from yambda_dl.data.synthetic.catalogue import Catalogue
from yambda_dl.data.synthetic.config import N_DAYS, N_WEEKS, Behaviour
from yambda_dl.data.synthetic.sampling import pick_in_ranges
from yambda_dl.data.synthetic.users import Users, day_bounds, session_counts


@dataclass
class Listens:
    """Listens of one batch in time order per user; users are local indices into the batch."""

    user: np.ndarray
    timestamp: np.ndarray
    item: np.ndarray  # dense item index
    organic: np.ndarray  # bool
    ratio: np.ndarray  # played_ratio_pct


def generate_listens(cat: Catalogue, users: Users, b: Behaviour, rng: np.random.Generator) -> Listens:
    """The listens of a batch: calendar -> runs -> items -> played ratio -> timestamps."""
    counts = session_counts(users, b, rng)
    slot = np.repeat(np.arange(counts.size), counts.ravel())  # (E,) in time order: user, day, session
    user, day = slot // (N_DAYS * b.session_slots), (slot // b.session_slots) % N_DAYS
    user_start = np.concatenate([[0], np.cumsum(users.n_events)])
    tau = (np.arange(len(slot)) - user_start[user]) / users.n_events[user]  # position in the user's history
    organic, source, first = _runs(slot, b, rng)
    item = cat.before_release(
        _pick_items(cat, users, _Context(user, day // 7, tau), organic, source, first, b, rng), day
    )
    ratio = _played_ratio(organic, source == 1, b, rng)
    timestamp = _timestamps(counts, slot, day, cat.track_length[item] * (ratio / 100.0), b, rng)
    return Listens(user, timestamp, item, organic, ratio)


def _runs(slot: np.ndarray, b: Behaviour, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of listening inside sessions: is_organic per run, the source of each event, each run's start.

    Sources: 0 the run's anchor artist, 1 a favourite track, 2 exploration, 3 popular this week.
    """
    n = len(slot)
    restart = np.ones(n, bool)
    restart[1:] = (slot[1:] != slot[:-1]) | (rng.random(n - 1) < b.restart)
    first = np.maximum.accumulate(np.where(restart, np.arange(n), 0))  # forward fill of each run's start
    organic = (rng.random(n) < b.organic)[first]
    u = rng.random(n)
    organic_source = np.where(u < b.favourite, 1, np.where(u > 1 - b.explore, 2, 0))
    recommended_source = np.where(restart | (u < b.popular_now), 3, 0)  # a recommended run opens on a hit
    return organic, np.where(organic, organic_source, recommended_source), first


@dataclass(frozen=True)
class _Context:
    """What an item pick may depend on, per event: the user (local), the week and the history position."""

    user: np.ndarray
    week: np.ndarray
    tau: np.ndarray  # in [0, 1): how far into the user's history

    def take(self, where: np.ndarray) -> _Context:
        return _Context(self.user[where], self.week[where], self.tau[where])


def _drift_pick(
    start: np.ndarray, values: np.ndarray, owner: np.ndarray, tau: np.ndarray, drift: float, rng: np.random.Generator
) -> np.ndarray:
    """Pick from each owner's ragged list, skewed to a head that rotates as the owner's history goes on."""
    length = start[owner + 1] - start[owner]
    offset = (length * rng.random(len(owner)) ** 2).astype(np.int64) + (tau * drift * length).astype(np.int64)
    return values[start[owner] + offset % length]


def _pick_favourite(cat: Catalogue, users: Users, ctx: _Context, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    return _drift_pick(users.fav_track_start, users.fav_tracks, ctx.user, ctx.tau, b.drift, rng)


def _user_genre(users: Users, user: np.ndarray, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    """The primary genre of each user most of the time, else the secondary one."""
    return users.genres[user, (rng.random(len(user)) >= b.genre_primary).astype(np.int64)]


def _pick_explore(cat: Catalogue, users: Users, ctx: _Context, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    """A uniform item of one of the user's two genres: the long tail that gets heard once."""
    genre = _user_genre(users, ctx.user, b, rng)
    lo, hi = cat.genre_item_start[genre], cat.genre_item_start[genre + 1]
    return lo + (rng.random(len(ctx.user)) * (hi - lo)).astype(np.int64)


def _pick_popular(cat: Catalogue, users: Users, ctx: _Context, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    """Popular now: the all-time hits of the user's genres (the feed is personalised), mixed with the week's
    charts, the hits that peak near the event's week for everyone."""
    n = len(ctx.week)
    genre = _user_genre(users, ctx.user, b, rng)
    lo, hi = cat.genre_item_start[genre], cat.genre_item_start[genre + 1]
    item = pick_in_ranges(cat.item_cum, lo, hi, rng.random(n))
    distance = (rng.geometric(b.trend_weeks, n) - 1) * rng.choice([-1, 1], n)
    group = np.clip(ctx.week + distance, -1, N_WEEKS) + 1
    lo, hi = cat.trend_start[group], cat.trend_start[group + 1]
    trending = (rng.random(n) < b.trending) & (hi > lo)
    pos = pick_in_ranges(cat.trend_cum, lo[trending], hi[trending], rng.random(int(trending.sum())))
    item[trending] = cat.trend_order[pos]
    return item


_PICKERS: dict[int, Callable[[Catalogue, Users, _Context, Behaviour, np.random.Generator], np.ndarray]] = {
    1: _pick_favourite,
    2: _pick_explore,
    3: _pick_popular,
}


def _pick_items(
    cat: Catalogue,
    users: Users,
    ctx: _Context,
    organic: np.ndarray,
    source: np.ndarray,
    first: np.ndarray,
    b: Behaviour,
    rng: np.random.Generator,
) -> np.ndarray:
    """The dense item of every listen, by its source; artist runs continue the anchor artist of their run."""
    item = np.zeros(len(source), np.int64)
    for code, pick in _PICKERS.items():
        where = np.flatnonzero(source == code)
        item[where] = pick(cat, users, ctx.take(where), b, rng)
    starts = np.flatnonzero(first == np.arange(len(first)))
    anchor = np.zeros(len(source), np.int64)
    anchor[starts] = cat.artist_of[item[starts]]  # a recommended run follows its opening track's artist
    own = starts[organic[starts]]  # an organic run plays one of the user's (drifting) favourite artists
    anchor[own] = _drift_pick(users.fav_artist_start, users.fav_artists, ctx.user[own], ctx.tau[own], b.drift, rng)
    on_artist = np.flatnonzero(source == 0)
    artist = anchor[first[on_artist]]
    lo, hi = cat.artist_start[artist], cat.artist_start[artist + 1]
    item[on_artist] = pick_in_ranges(cat.within_cum, lo, hi, rng.random(len(on_artist)))
    return item


def _played_ratio(organic: np.ndarray, favourite: np.ndarray, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    """Bimodal played_ratio_pct: skips (0-4, a third exactly 0), partial plays, full plays, replays."""
    n = len(organic)
    kind = np.where(~organic, 0, np.where(favourite, 1, 2))
    cum = np.cumsum(np.array([b.ratio_recommended, b.ratio_favourite, b.ratio_organic]), axis=1)
    bucket = (rng.random(n)[:, None] > cum[kind]).sum(axis=1)  # 0 skip, 1 partial, 2 full, 3 replay
    u = rng.random(n)  # one uniform places the value inside whichever bucket the event fell in
    z = b.zero_of_skips
    skip = np.where(u < z, 0, 1 + ((u - z) / (1 - z) * 4).astype(np.int64))
    f = b.full_at_100
    full = np.where(u < f, 100, 95 + ((u - f) / (1 - f) * 5).astype(np.int64))  # most full plays are 100
    partial = 5 + (90 * u**b.partial_skew).astype(np.int64)
    values = np.stack([skip, partial, full, 101 + (58 * u**3).astype(np.int64)])
    return values[bucket, np.arange(n)].astype(np.uint16)


def _timestamps(
    counts: np.ndarray,
    slot: np.ndarray,
    day: np.ndarray,
    played: np.ndarray,
    b: Behaviour,
    rng: np.random.Generator,
) -> np.ndarray:
    """Seconds of each listen: sessions back to back in their day with 30+ minute gaps, tracks back to back
    in their session; floored to multiples of 5, so short skips share a timestamp with the next event."""
    duration = played + rng.integers(0, b.ui_seconds, len(slot))  # a few seconds of UI between tracks
    duration[rng.random(len(slot)) < b.synced] = 0.0
    span = np.bincount(slot, weights=duration, minlength=counts.size).reshape(counts.shape)
    gap = (counts > 0) * (b.session_gap + rng.exponential(b.session_gap_mean, counts.shape))
    step = span + gap
    offset = np.cumsum(step, axis=-1) - step  # session start inside the day, before placing the day
    total = step.sum(axis=-1)
    day_start, day_end = day_bounds()
    length = (day_end - day_start)[None, :]
    squeeze = np.minimum(1.0, length / np.maximum(total, 1.0))  # an overfull day is compressed into the day
    lead = rng.random(total.shape) * np.maximum(length - total, 0)
    session_start = (lead[..., None] + offset * squeeze[..., None]).ravel()
    ends = np.cumsum(duration)
    slot_begin = np.concatenate([[0], np.cumsum(counts.ravel())])[slot]
    before = ends - duration - np.concatenate([[0.0], ends])[slot_begin]  # played earlier in the session
    inside = session_start[slot] + before * squeeze.reshape(-1)[slot // b.session_slots]
    seconds = day_start[day] + np.minimum(inside, length[0, day] - 1)
    return (seconds // 5 * 5).astype(np.uint32)
