"""The catalogue: genres -> artists -> items (contiguous ranges), their popularity, weekly hits and track lengths.

Popularity is a Pareto artist weight times a Zipf rank inside the artist; a few items are hits of one week
(trends); a few are new releases of the last days (heard only from their release day on); raw ids are sparse, like
the release's.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yambda_dl.data.synthetic.config import MAX_ITEM_ID, N_DAYS, TREND_GROUPS, Behaviour, SynthConfig
from yambda_dl.data.synthetic.sampling import cumsum0, cut_points, sparse_ids


@dataclass(frozen=True)
class Catalogue:
    """Items sorted by (genre, artist); ranges and cumulative weights for vectorized weighted picks."""

    item_ids: np.ndarray  # (n_items,) uint32 raw id of each dense item
    artist_of: np.ndarray  # (n_items,) dense artist
    artist_start: np.ndarray  # (n_artists + 1,) item range of each artist
    genre_artist_start: np.ndarray  # (n_genres + 1,) artist range of each genre
    genre_item_start: np.ndarray  # (n_genres + 1,) item range of each genre
    genre_p: np.ndarray  # (n_genres,) genre popularity
    within_cum: np.ndarray  # (n_items + 1,) cumulative within-artist weights
    item_cum: np.ndarray  # (n_items + 1,) cumulative all-time popularity
    artist_cum: np.ndarray  # (n_artists + 1,) cumulative artist popularity
    trend_order: np.ndarray  # (n_hits,) the hit items sorted by peak week
    trend_cum: np.ndarray  # (n_hits + 1,) cumulative hit sizes in trend_order
    trend_start: np.ndarray  # (TREND_GROUPS + 1,) trend_order range of each peak week, from week -1
    track_length: np.ndarray  # (n_items,) uint32 seconds
    release_day: np.ndarray  # (n_items,) int64 first day (0 = the oldest) an item can be heard: 0 but for releases

    def before_release(self, item: np.ndarray, day: np.ndarray) -> np.ndarray:
        """Listens drawn for a new release before its release day play the artist's first track instead (never a
        release itself): the same artist, so runs and tastes keep their shape."""
        early = self.release_day[item] > day
        out = item.copy()
        out[early] = self.artist_start[self.artist_of[item[early]]]
        return out


def build_catalogue(cfg: SynthConfig, rng: np.random.Generator) -> Catalogue:
    """Genres -> artists -> items, their popularity, weekly trend peaks, lengths and raw ids."""
    b = cfg.behaviour
    artist_start = cut_points(rng, cfg.n_items, cfg.n_items / b.items_per_artist, sigma=b.artist_size_sigma)
    n_artists = len(artist_start) - 1
    genre_artist_start = cut_points(rng, n_artists, cfg.n_genres, sigma=b.genre_size_sigma)
    artist_of = np.repeat(np.arange(n_artists), np.diff(artist_start))
    rank_in_artist = np.arange(cfg.n_items) - artist_start[artist_of]
    within = (rank_in_artist + 1.0) ** -b.within_artist_zipf
    within /= np.bincount(artist_of, within)[artist_of]  # an artist's tracks share the artist's popularity
    artist_weight = rng.pareto(b.artist_pareto, n_artists) + 1.0
    item_weight = artist_weight[artist_of] * within
    genre_of_artist = np.repeat(np.arange(len(genre_artist_start) - 1), np.diff(genre_artist_start))
    genre_weight = np.bincount(genre_of_artist, artist_weight)
    # a few items are hits: each peaks in one week, for everyone, with a Pareto-distributed size of hit
    hits = np.sort(rng.choice(cfg.n_items, size=min(cfg.n_items, b.hits_per_week * TREND_GROUPS), replace=False))
    hit_week = rng.integers(0, TREND_GROUPS, len(hits))
    by_week = np.argsort(hit_week, kind="stable")
    # drawn in the order of version 3 (ids, hit sizes, lengths), so that new_releases=0 writes its data exactly
    item_ids = rng.permutation(sparse_ids(rng, cfg.n_items, MAX_ITEM_ID, low=1))
    trend_cum = cumsum0(rng.pareto(b.hit_pareto, len(hits))[by_week] + 1.0)
    lengths = track_lengths(rng, cfg.n_items, b)
    return Catalogue(
        item_ids=item_ids,
        artist_of=artist_of,
        artist_start=artist_start,
        genre_artist_start=genre_artist_start,
        genre_item_start=artist_start[genre_artist_start],
        genre_p=genre_weight / genre_weight.sum(),
        within_cum=cumsum0(within),
        item_cum=cumsum0(item_weight),
        artist_cum=cumsum0(artist_weight),
        trend_order=hits[by_week],
        trend_cum=trend_cum,
        trend_start=np.searchsorted(hit_week[by_week], np.arange(TREND_GROUPS + 1)),
        track_length=lengths,
        release_day=release_days(rng, item_weight, rank_in_artist, b),  # drawn last: earlier fields keep their draws
    )


def release_days(rng: np.random.Generator, weight: np.ndarray, rank_in_artist: np.ndarray, b: Behaviour) -> np.ndarray:
    """Day of release of each item: 0 for the back catalogue; for a `new_releases` share of the items, drawn by
    popularity among the tracks that are not their artist's first, a day uniform over the last `release_days`."""
    days = np.zeros(len(weight), np.int64)
    candidates = np.flatnonzero(rank_in_artist > 0)
    n = min(round(b.new_releases * len(weight)), len(candidates))
    if n:
        p = weight[candidates] / weight[candidates].sum()
        released = rng.choice(candidates, size=n, replace=False, p=p)
        days[released] = N_DAYS - rng.integers(1, min(b.release_days, N_DAYS) + 1, n)
    return days


def track_lengths(rng: np.random.Generator, n: int, b: Behaviour) -> np.ndarray:
    """Log-normal lengths (median 200 s, p90 275 s) with a thin tail up to 2,500 s, multiples of 5."""
    seconds = b.track_length_median * np.exp(rng.normal(0.0, b.track_length_sigma, n))
    long = rng.random(n) < b.long_tracks
    shortest, longest = b.long_track_seconds
    seconds[long] = np.exp(rng.uniform(np.log(shortest), np.log(longest), int(long.sum())))
    return np.clip(np.round(seconds / 5) * 5, 5, longest).astype(np.uint32)
