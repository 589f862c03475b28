"""Users and their calendar: listens per user, tastes (genres, favourite artists and tracks), active days and the
sessions of each day.

Listens per user are log-normal; they are spread by multinomials over active days (the test day decided apart)
and up to `session_slots` sessions a day.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from yambda_dl.data.protocol import DAY, LAST_TIMESTAMP
from yambda_dl.data.synthetic.catalogue import Catalogue
from yambda_dl.data.synthetic.config import N_DAYS, Behaviour, SynthConfig
from yambda_dl.data.synthetic.sampling import pick_in_ranges


@dataclass(frozen=True)
class Users:
    """One batch of users: sizes, taste and ragged favourite lists (flattened, with offsets)."""

    listening: np.ndarray  # (B,) bool: False = a user whose listens are dropped (8% in the release)
    n_events: np.ndarray  # (B,) listens generated, phantom ones included
    genres: np.ndarray  # (B, 2) primary and secondary genre
    fav_artist_start: np.ndarray  # (B + 1,)
    fav_artists: np.ndarray
    fav_track_start: np.ndarray  # (B + 1,)
    fav_tracks: np.ndarray


def make_users(cfg: SynthConfig, cat: Catalogue, rng: np.random.Generator, n: int) -> Users:
    b = cfg.behaviour
    listening = rng.random(n) >= b.no_listens
    median = np.where(listening, cfg.median_listens, min(b.phantom_median, cfg.median_listens))
    n_events = np.round(median * np.exp(rng.normal(0.0, b.listen_sigma, n)))
    n_events = np.clip(n_events, 1, b.max_listens).astype(np.int64)
    genres = rng.choice(len(cat.genre_p), size=(n, 2), p=cat.genre_p)
    least, per, most = b.favourite_artists
    artist_counts = np.clip(least + n_events // per, least, most)
    artist_start = np.concatenate([[0], np.cumsum(artist_counts)])
    owner = np.repeat(np.arange(n), artist_counts)
    genre = np.where(rng.random(len(owner)) < b.genre_primary, genres[owner, 0], genres[owner, 1])
    gas = cat.genre_artist_start
    fav_artists = pick_in_ranges(cat.artist_cum, gas[genre], gas[genre + 1], rng.random(len(owner)))
    least, per, most = b.favourite_tracks
    track_counts = np.clip(least + n_events // per, least, most)
    track_start = np.concatenate([[0], np.cumsum(track_counts)])
    owner = np.repeat(np.arange(n), track_counts)
    # favourite tracks come from the user's favourite artists, the head of that list most often
    which = artist_start[owner] + (artist_counts[owner] * rng.random(len(owner)) ** 2).astype(np.int64)
    artist = fav_artists[which]
    lo, hi = cat.artist_start[artist], cat.artist_start[artist + 1]
    fav_tracks = pick_in_ranges(cat.within_cum, lo, hi, rng.random(len(owner)))
    return Users(listening, n_events, genres, artist_start, fav_artists, track_start, fav_tracks)


def day_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) second of each day, oldest first; the last day is exactly the test day."""
    end = LAST_TIMESTAMP - DAY * np.arange(N_DAYS - 1, -1, -1, dtype=np.int64)
    return np.maximum(end - DAY, 0), end


def active_days(users: Users, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    """(B, N_DAYS) day weights, zero on inactive days; active days drawn by Gumbel top-k, leaning recent."""
    n = len(users.n_events)
    n_days = np.round(N_DAYS * (1 - np.exp(-users.n_events / b.days_scale)))
    n_days = np.clip(n_days, 1, N_DAYS).astype(np.int64)
    keys = np.log(np.linspace(*b.recency, N_DAYS))[None, :] - np.log(-np.log(rng.random((n, N_DAYS))))
    keys[:, -1] = np.where(rng.random(n) < b.last_day_share, np.inf, -np.inf)  # the test day, decided apart
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    active = rank < n_days[:, None]
    intensity = rng.lognormal(0.0, b.day_sigma, (n, N_DAYS))
    intensity[:, -1] *= b.last_day_boost
    return active * intensity


def session_counts(users: Users, b: Behaviour, rng: np.random.Generator) -> np.ndarray:
    """(B, N_DAYS, session_slots) listens per user, day and session, summing to users.n_events."""
    weights = active_days(users, b, rng)
    per_day = rng.multinomial(users.n_events, weights / weights.sum(axis=1, keepdims=True))
    n_sessions = np.minimum(1 + rng.poisson(b.extra_sessions, per_day.shape), b.session_slots)
    slot_w = rng.lognormal(0.0, b.session_sigma, (*per_day.shape, b.session_slots))
    slot_w *= np.arange(b.session_slots) < n_sessions[..., None]
    return rng.multinomial(per_day, slot_w / slot_w.sum(axis=-1, keepdims=True))
