"""A Yambda-like synthetic dataset in the real release layout, with the marginals of SPEC.md section 8 and the
structure that lets models be told apart (tastes, sessions, re-listening, artist runs, popularity trends).

The generative story, per user batch, vectorized with numpy:
  catalogue  genres -> artists -> items (contiguous ranges); popularity = Pareto artist weight x Zipf rank in
             the artist; a few items are hits of one week (trends); embedding = genre + artist + item noise.
  calendar   log-normal listens per user, spread by multinomials over active days (the test day decided
             apart) and up to SESSION_SLOTS sessions a day, laid out back to back with 30+ minute gaps.
  items      runs of same-artist listening ("restart" mask + forward fill); organic runs anchor on the user's
             drifting favourite artists, recommended runs on what is popular now; organic listens
             also re-listen drifting favourite tracks or explore the user's genres.
  feedback   likes on re-listened (user, item) pairs, dislikes on skipped one-off listens, unlikes and
             undislikes at later events of the same pairs; 0.5% exact duplicate listens.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import DatasetLayout
from yambda_dl.data.split import default_cache_dir
from yambda_dl.utils.progress import Progress

VERSION = 2  # 2: weekly charts of HITS_PER_WEEK short-lived hits, flatter artist popularity (SPEC.md section 8)
MARKER_FILE = "SYNTHETIC.json"
COMPRESSION = "zstd"  # pyarrow writes zstd at level 1 by default: fast, and still 3-5x smaller than raw
ONE_ROW_GROUP = 1 << 30  # one Parquet row group per user batch, whatever its size

# --- id spaces and calendar (SPEC.md sections 1 and 3) ------------------------------------------------------
MAX_UID = 1_000_000
MAX_ITEM_ID = 9_390_623
MAX_ARTIST_ID = 1_290_000
MAX_ALBUM_ID = 3_370_000
DAY = 86_400
N_DAYS = 301  # days counted back from LAST_TIMESTAMP: the last is exactly the test day, the first is partial
N_WEEKS = (N_DAYS + 6) // 7
TREND_GROUPS = N_WEEKS + 2  # peak weeks -1 .. N_WEEKS: trends fading when the data starts, or still rising
SESSION_SLOTS = 6  # at most this many listening sessions a day

# --- behaviour: shares are SPEC.md section 8's figures; shapes were tuned against stats.compute_stats -------
LISTEN_SIGMA = 1.0  # log-normal spread of listens per user (SPEC: "sigma about 1 fits roughly")
NO_LISTENS = 0.08  # users without listens: their listens are generated (for likes), then dropped
PHANTOM_MEDIAN = 300
MAX_LISTENS = 150_000
DAYS_SCALE = 9_500  # active days = 301 * (1 - exp(-listens / DAYS_SCALE)): 3,000 listens -> ~82 days
LAST_DAY_SHARE = 0.5  # of listening users, active on the test day (46% of all users in SPEC)
RESTART = 0.3  # chance that a listen opens a new run (new anchor artist) inside a session: runs of ~3
ORGANIC = 0.51  # listens: 49% recommendation-driven
FAVOURITE = 0.45  # organic listens that re-listen a favourite track
EXPLORE = 0.025  # organic listens of a uniform item of the user's genres: the long tail heard once
POPULAR_NOW = 0.6  # recommended listens taking what is popular this week (the rest stay on the run's artist)
TRENDING = 0.5  # share of the popular-now picks that follow weekly trends rather than all-time popularity
HITS_PER_WEEK = 30  # items that trend, peaking in each week: a chart's worth, whatever the catalogue's size
HIT_PARETO = 5.0  # sizes of hits: a few lead each week's chart, none reaching every user (top reach ~0.6)
SYNCED = 0.06  # listens logged in the same second as the one before (offline plays synced in a burst)
LAST_DAY_BOOST = 1.3  # the test day is a busier day than most: ~34 Listen+ per active user in SPEC
TREND_WEEKS = 0.9  # geometric parameter of |peak week - this week|: a hit lives about a week, then fades
DRIFT = 0.7  # favourites rotate through 70% of the user's list over their history: recency matters
GENRE_PRIMARY = 0.75
ARTIST_PARETO = 1.25  # artists' popularity: the top 1% of items carry about half the listens
WITHIN_ARTIST_ZIPF = 2.8  # an artist's plays go mostly to its first tracks: a third of the items heard once
ITEMS_PER_ARTIST = 7.0
ITEMS_PER_ALBUM = 3.0
SECOND_ALBUM = 0.1  # items also on a compilation: about 1.1 albums per item
EMBEDDED = 0.82
DUPLICATES = 0.005
PER_LISTEN = {"likes": 0.019, "dislikes": 0.0023}
UNDO = {"unlikes": 0.37, "undislikes": 0.2}  # of likes / dislikes, taken back at a later event
RECOMMENDED = {"likes": 0.42, "dislikes": 0.48, "unlikes": 0.05, "undislikes": 0.10}  # is_organic = 0
# played_ratio_pct: chances of (skip 0-4, partial 5-94, full 95-100, replayed 101-159) by listen kind
RATIO_MIX = {
    "recommended": (0.19, 0.165, 0.64, 0.005),
    "favourite": (0.18, 0.17, 0.645, 0.005),
    "organic": (0.362, 0.224, 0.409, 0.005),
}
ZERO_OF_SKIPS = 0.31  # 7.4% of listens are exactly 0 out of 24% skips
PARTIAL_SKEW = 2.0  # partial plays lean short: 5 + 90 u^2, so only ~30% of them reach Listen+


@dataclass(frozen=True)
class SynthConfig:
    """The size of a synthetic dataset; everything else follows SPEC.md section 8."""

    name: str
    n_users: int
    n_items: int  # catalogue size; about 3/4 of it gets heard
    median_listens: float  # per listening user
    n_genres: int
    # Memory grows linearly with batch_users (one batch's events and tables are held): 256 users at Yambda's
    # ~4,650 listens each peak at ~0.8 GB. Random streams are per batch, so it is part of the data's identity.
    batch_users: int


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig("tiny", n_users=50, n_items=800, median_listens=60, n_genres=4, batch_users=16),
    "small": SynthConfig("small", n_users=1_000, n_items=200_000, median_listens=2_500, n_genres=48, batch_users=128),
    "50m": SynthConfig("50m", n_users=10_000, n_items=1_250_000, median_listens=3_000, n_genres=128, batch_users=256),
}


@dataclass(frozen=True)
class SynthSummary:
    """What generate() wrote: rows per event file, users, distinct items, seconds taken and where."""

    name: str
    root: Path
    rows: dict[str, int]
    users: int
    items: int
    seconds: float


@dataclass(frozen=True)
class _Catalogue:
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


# --- public API ---------------------------------------------------------------------------------------------


def resolve_config(preset: str | SynthConfig) -> SynthConfig:
    """A preset's config, or the config given; an unknown name raises, listing the presets."""
    if isinstance(preset, SynthConfig):
        DatasetLayout(Path("."), preset.name)  # validates the name as a dataset folder name
        return preset
    if preset not in PRESETS:
        raise ValueError(f"unknown synthetic preset {preset!r}; valid choices: {', '.join(PRESETS)}")
    return PRESETS[preset]


def generate(
    preset: str | SynthConfig, root: Path | str, seed: int = 0, progress: bool = True, overwrite: bool = False
) -> SynthSummary:
    """Write a synthetic dataset named after the preset under `root` in the Yambda layout (SPEC.md 1-2).

    Deterministic by (config, seed). Regenerating the same dataset is a no-op unless `overwrite`; a root
    that holds another dataset (synthetic or real) is refused.
    """
    cfg = resolve_config(preset)
    root = Path(root).expanduser()
    identity = {"name": cfg.name, "config": dataclasses.asdict(cfg), "seed": int(seed), "version": VERSION}
    done = _check_root(root, identity, overwrite)
    if done is not None:
        return done
    _write_marker(root, {**identity, "complete": False})
    bar = Progress(f"synth {cfg.name}", total=cfg.n_users, unit="users", enabled=progress)
    catalogue = _build_catalogue(cfg, _rng(seed, 0))
    rows, users, items = _write_events(cfg, catalogue, root, seed, bar)
    _write_embeddings(catalogue, root, seed)
    _write_mappings(catalogue, root, _rng(seed, 3))
    summary = SynthSummary(cfg.name, root, rows, users, items, round(bar.elapsed, 1))
    _write_marker(root, {**identity, "complete": True, "summary": _summary_json(summary)})
    bar.summary(f"{rows['multi_event']:,} rows, {users:,} users, {items:,} items -> {root}")
    return summary


# --- the root's marker file ---------------------------------------------------------------------------------


def _check_root(root: Path, identity: dict, overwrite: bool) -> SynthSummary | None:
    """The finished summary if this very dataset is already there; raise if the root holds another one.

    The same dataset (name, config, seed) made by an older generator VERSION is regenerated in place."""
    marker = root / MARKER_FILE
    if not marker.is_file():
        found = [p for p in (root / S.EMBEDDINGS_FILE, root / "flat", root / "sequential") if p.exists()]
        if found and not overwrite:
            raise ValueError(
                f"{root} already holds Yambda files not made by the generator ({found[0]}); "
                f"choose an empty root for synthetic dataset {identity['name']!r}"
            )
        return None
    held = json.loads(marker.read_text())
    differs = [k for k in identity if held.get(k) != identity[k]]
    if differs == ["version"] and held.get("version", 0) < identity["version"]:
        overwrite = True  # the same dataset from an older generator: regenerated, never mixed with the new one
    if held.get("name") != identity["name"] or (differs and not overwrite):
        raise ValueError(
            f"{root} holds synthetic dataset {_describe(held)}; refusing to write {_describe(identity)} "
            f"there (embeddings and mappings belong to the whole root): use another root"
            + ("" if differs == ["name"] else ", or overwrite=True to replace it")
        )
    if held.get("complete") and not overwrite:
        return _summary_from_json(held["summary"], root)
    for fmt in S.FORMATS:  # an unfinished or overwritten run: start this dataset's folders afresh
        shutil.rmtree(root / fmt / identity["name"], ignore_errors=True)
    shutil.rmtree(default_cache_dir(root), ignore_errors=True)  # splits of the old files: never read again
    return None


def _describe(identity: dict) -> str:
    return (
        f"{identity.get('name')!r} (seed {identity.get('seed')}, version {identity.get('version')}, "
        f"config {identity.get('config')})"
    )


def _write_marker(root: Path, content: dict) -> None:
    with io.atomic_path(root / MARKER_FILE) as tmp:
        tmp.write_text(json.dumps(content, indent=1, sort_keys=True))


def _summary_json(summary: SynthSummary) -> dict:
    fields = ("name", "rows", "users", "items", "seconds")
    return {f: getattr(summary, f) for f in fields}


def _summary_from_json(data: dict, root: Path) -> SynthSummary:
    return SynthSummary(data["name"], root, dict(data["rows"]), data["users"], data["items"], data["seconds"])


# --- small vectorized helpers -------------------------------------------------------------------------------


def _rng(seed: int, stream: int, index: int = 0) -> np.random.Generator:
    """An independent generator per (seed, stream, index): batches and chunks never share random numbers."""
    return np.random.default_rng([int(seed), stream, index])


def _cumsum0(weights: np.ndarray) -> np.ndarray:
    return np.concatenate([[0.0], np.cumsum(weights, dtype=np.float64)])


def _pick_in_ranges(cum: np.ndarray, lo: np.ndarray, hi: np.ndarray, u: np.ndarray) -> np.ndarray:
    """A weighted draw of a position in [lo, hi) per u in [0, 1), from cumulative weights `cum` (n + 1)."""
    x = cum[lo] + u * (cum[hi] - cum[lo])
    return np.clip(np.searchsorted(cum, x, side="right") - 1, lo, np.maximum(hi - 1, lo))


def _cut_points(rng: np.random.Generator, total: int, n_parts: float, sigma: float) -> np.ndarray:
    """Split range(total) into ~n_parts contiguous parts of log-normal sizes: the part starts, then total."""
    sizes = rng.lognormal(0.0, sigma, max(1, round(n_parts)))
    cuts = np.round(_cumsum0(sizes) / sizes.sum() * total).astype(np.int64)
    return np.unique(cuts)


def _sparse_ids(rng: np.random.Generator, n: int, upper: int, low: int = 0) -> np.ndarray:
    """n distinct sorted ids in [low, upper]: like Yambda's, they must be remapped before indexing tables."""
    return np.sort(rng.choice(upper - low + 1, size=n, replace=False)).astype(np.uint32) + np.uint32(low)


def _group_starts(keys: np.ndarray) -> np.ndarray:
    """Start index of each run of equal values in a sorted array, plus len(keys)."""
    change = np.flatnonzero(keys[1:] != keys[:-1]) + 1
    return np.concatenate([[0], change, [len(keys)]]).astype(np.int64)


# --- catalogue ----------------------------------------------------------------------------------------------


def _build_catalogue(cfg: SynthConfig, rng: np.random.Generator) -> _Catalogue:
    """Genres -> artists -> items, their popularity, weekly trend peaks, lengths and raw ids."""
    artist_start = _cut_points(rng, cfg.n_items, cfg.n_items / ITEMS_PER_ARTIST, sigma=1.0)
    n_artists = len(artist_start) - 1
    genre_artist_start = _cut_points(rng, n_artists, cfg.n_genres, sigma=0.5)
    artist_of = np.repeat(np.arange(n_artists), np.diff(artist_start))
    rank_in_artist = np.arange(cfg.n_items) - artist_start[artist_of]
    within = (rank_in_artist + 1.0) ** -WITHIN_ARTIST_ZIPF
    within /= np.bincount(artist_of, within)[artist_of]  # an artist's tracks share the artist's popularity
    artist_weight = rng.pareto(ARTIST_PARETO, n_artists) + 1.0
    item_weight = artist_weight[artist_of] * within
    genre_of_artist = np.repeat(np.arange(len(genre_artist_start) - 1), np.diff(genre_artist_start))
    genre_weight = np.bincount(genre_of_artist, artist_weight)
    # a few items are hits: each peaks in one week, for everyone, with a Pareto-distributed size of hit
    hits = np.sort(rng.choice(cfg.n_items, size=min(cfg.n_items, HITS_PER_WEEK * TREND_GROUPS), replace=False))
    hit_week = rng.integers(0, TREND_GROUPS, len(hits))
    by_week = np.argsort(hit_week, kind="stable")
    return _Catalogue(
        item_ids=rng.permutation(_sparse_ids(rng, cfg.n_items, MAX_ITEM_ID, low=1)),
        artist_of=artist_of,
        artist_start=artist_start,
        genre_artist_start=genre_artist_start,
        genre_item_start=artist_start[genre_artist_start],
        genre_p=genre_weight / genre_weight.sum(),
        within_cum=_cumsum0(within),
        item_cum=_cumsum0(item_weight),
        artist_cum=_cumsum0(artist_weight),
        trend_order=hits[by_week],
        trend_cum=_cumsum0(rng.pareto(HIT_PARETO, len(hits))[by_week] + 1.0),
        trend_start=np.searchsorted(hit_week[by_week], np.arange(TREND_GROUPS + 1)),
        track_length=_track_lengths(rng, cfg.n_items),
    )


def _track_lengths(rng: np.random.Generator, n: int) -> np.ndarray:
    """Log-normal lengths (median 200 s, p90 275 s) with a thin tail up to 2,500 s, multiples of 5."""
    seconds = 200.0 * np.exp(rng.normal(0.0, 0.25, n))
    long = rng.random(n) < 0.003
    seconds[long] = np.exp(rng.uniform(np.log(400), np.log(2_500), int(long.sum())))
    return np.clip(np.round(seconds / 5) * 5, 5, 2_500).astype(np.uint32)


# --- users and their calendar -------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Users:
    """One batch of users: sizes, taste and ragged favourite lists (flattened, with offsets)."""

    listening: np.ndarray  # (B,) bool: False = a user whose listens are dropped (8% in SPEC)
    n_events: np.ndarray  # (B,) listens generated, phantom ones included
    genres: np.ndarray  # (B, 2) primary and secondary genre
    fav_artist_start: np.ndarray  # (B + 1,)
    fav_artists: np.ndarray
    fav_track_start: np.ndarray  # (B + 1,)
    fav_tracks: np.ndarray


def _make_users(cfg: SynthConfig, cat: _Catalogue, rng: np.random.Generator, n: int) -> _Users:
    listening = rng.random(n) >= NO_LISTENS
    median = np.where(listening, cfg.median_listens, min(PHANTOM_MEDIAN, cfg.median_listens))
    n_events = np.round(median * np.exp(rng.normal(0.0, LISTEN_SIGMA, n)))
    n_events = np.clip(n_events, 1, MAX_LISTENS).astype(np.int64)
    genres = rng.choice(len(cat.genre_p), size=(n, 2), p=cat.genre_p)
    artist_counts = np.clip(5 + n_events // 60, 5, 400)
    artist_start = np.concatenate([[0], np.cumsum(artist_counts)])
    owner = np.repeat(np.arange(n), artist_counts)
    genre = np.where(rng.random(len(owner)) < GENRE_PRIMARY, genres[owner, 0], genres[owner, 1])
    gas = cat.genre_artist_start
    fav_artists = _pick_in_ranges(cat.artist_cum, gas[genre], gas[genre + 1], rng.random(len(owner)))
    track_counts = np.clip(10 + n_events // 30, 10, 1_500)
    track_start = np.concatenate([[0], np.cumsum(track_counts)])
    owner = np.repeat(np.arange(n), track_counts)
    # favourite tracks come from the user's favourite artists, the head of that list most often
    which = artist_start[owner] + (artist_counts[owner] * rng.random(len(owner)) ** 2).astype(np.int64)
    artist = fav_artists[which]
    lo, hi = cat.artist_start[artist], cat.artist_start[artist + 1]
    fav_tracks = _pick_in_ranges(cat.within_cum, lo, hi, rng.random(len(owner)))
    return _Users(listening, n_events, genres, artist_start, fav_artists, track_start, fav_tracks)


def _day_bounds() -> tuple[np.ndarray, np.ndarray]:
    """Start and end (exclusive) second of each day, oldest first; the last day is exactly the test day."""
    end = S.LAST_TIMESTAMP - DAY * np.arange(N_DAYS - 1, -1, -1, dtype=np.int64)
    return np.maximum(end - DAY, 0), end


def _active_days(users: _Users, rng: np.random.Generator) -> np.ndarray:
    """(B, N_DAYS) day weights, zero on inactive days; active days drawn by Gumbel top-k, leaning recent."""
    n = len(users.n_events)
    n_days = np.round(N_DAYS * (1 - np.exp(-users.n_events / DAYS_SCALE)))
    n_days = np.clip(n_days, 1, N_DAYS).astype(np.int64)
    keys = np.log(np.linspace(0.6, 1.4, N_DAYS))[None, :] - np.log(-np.log(rng.random((n, N_DAYS))))
    keys[:, -1] = np.where(rng.random(n) < LAST_DAY_SHARE, np.inf, -np.inf)  # the test day, decided apart
    rank = np.argsort(np.argsort(-keys, axis=1), axis=1)
    active = rank < n_days[:, None]
    intensity = rng.lognormal(0.0, 0.7, (n, N_DAYS))
    intensity[:, -1] *= LAST_DAY_BOOST
    return active * intensity


def _session_counts(users: _Users, rng: np.random.Generator) -> np.ndarray:
    """(B, N_DAYS, SESSION_SLOTS) listens per user, day and session, summing to users.n_events."""
    weights = _active_days(users, rng)
    per_day = rng.multinomial(users.n_events, weights / weights.sum(axis=1, keepdims=True))
    n_sessions = np.minimum(1 + rng.poisson(1.2, per_day.shape), SESSION_SLOTS)
    slot_w = rng.lognormal(0.0, 0.8, (*per_day.shape, SESSION_SLOTS))
    slot_w *= np.arange(SESSION_SLOTS) < n_sessions[..., None]
    return rng.multinomial(per_day, slot_w / slot_w.sum(axis=-1, keepdims=True))


# --- listens of one batch -----------------------------------------------------------------------------------


@dataclass
class _Listens:
    """Listens of one batch in time order per user; users are local indices into the batch."""

    user: np.ndarray
    timestamp: np.ndarray
    item: np.ndarray  # dense item index
    organic: np.ndarray  # bool
    ratio: np.ndarray  # played_ratio_pct


def _generate_listens(cat: _Catalogue, users: _Users, rng: np.random.Generator) -> _Listens:
    """The listens of a batch: calendar -> runs -> items -> played ratio -> timestamps."""
    counts = _session_counts(users, rng)
    slot = np.repeat(np.arange(counts.size), counts.ravel())  # (E,) in time order: user, day, session
    user, day = slot // (N_DAYS * SESSION_SLOTS), (slot // SESSION_SLOTS) % N_DAYS
    user_start = np.concatenate([[0], np.cumsum(users.n_events)])
    tau = (np.arange(len(slot)) - user_start[user]) / users.n_events[user]  # position in the user's history
    organic, source, first = _runs(slot, rng)
    item = _pick_items(cat, users, _Context(user, day // 7, tau), organic, source, first, rng)
    ratio = _played_ratio(organic, source == 1, rng)
    timestamp = _timestamps(counts, slot, day, cat.track_length[item] * (ratio / 100.0), rng)
    return _Listens(user, timestamp, item, organic, ratio)


def _runs(slot: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Runs of listening inside sessions: is_organic per run, the source of each event, each run's start.

    Sources: 0 the run's anchor artist, 1 a favourite track, 2 exploration, 3 popular this week.
    """
    n = len(slot)
    restart = np.ones(n, bool)
    restart[1:] = (slot[1:] != slot[:-1]) | (rng.random(n - 1) < RESTART)
    first = np.maximum.accumulate(np.where(restart, np.arange(n), 0))  # forward fill of each run's start
    organic = (rng.random(n) < ORGANIC)[first]
    u = rng.random(n)
    organic_source = np.where(u < FAVOURITE, 1, np.where(u > 1 - EXPLORE, 2, 0))
    recommended_source = np.where(restart | (u < POPULAR_NOW), 3, 0)  # a recommended run opens on a hit
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
    start: np.ndarray, values: np.ndarray, owner: np.ndarray, tau: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Pick from each owner's ragged list, skewed to a head that rotates as the owner's history goes on."""
    length = start[owner + 1] - start[owner]
    offset = (length * rng.random(len(owner)) ** 2).astype(np.int64) + (tau * DRIFT * length).astype(np.int64)
    return values[start[owner] + offset % length]


def _pick_favourite(cat: _Catalogue, users: _Users, ctx: _Context, rng: np.random.Generator) -> np.ndarray:
    return _drift_pick(users.fav_track_start, users.fav_tracks, ctx.user, ctx.tau, rng)


def _user_genre(users: _Users, user: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The primary genre of each user most of the time, else the secondary one."""
    return users.genres[user, (rng.random(len(user)) >= GENRE_PRIMARY).astype(np.int64)]


def _pick_explore(cat: _Catalogue, users: _Users, ctx: _Context, rng: np.random.Generator) -> np.ndarray:
    """A uniform item of one of the user's two genres: the long tail that gets heard once."""
    genre = _user_genre(users, ctx.user, rng)
    lo, hi = cat.genre_item_start[genre], cat.genre_item_start[genre + 1]
    return lo + (rng.random(len(ctx.user)) * (hi - lo)).astype(np.int64)


def _pick_popular(cat: _Catalogue, users: _Users, ctx: _Context, rng: np.random.Generator) -> np.ndarray:
    """Popular now: the all-time hits of the user's genres (the feed is personalised), mixed with the week's
    charts, the hits that peak near the event's week for everyone."""
    n = len(ctx.week)
    genre = _user_genre(users, ctx.user, rng)
    lo, hi = cat.genre_item_start[genre], cat.genre_item_start[genre + 1]
    item = _pick_in_ranges(cat.item_cum, lo, hi, rng.random(n))
    distance = (rng.geometric(TREND_WEEKS, n) - 1) * rng.choice([-1, 1], n)
    group = np.clip(ctx.week + distance, -1, N_WEEKS) + 1
    lo, hi = cat.trend_start[group], cat.trend_start[group + 1]
    trending = (rng.random(n) < TRENDING) & (hi > lo)
    pos = _pick_in_ranges(cat.trend_cum, lo[trending], hi[trending], rng.random(int(trending.sum())))
    item[trending] = cat.trend_order[pos]
    return item


_PICKERS: dict[int, Callable[[_Catalogue, _Users, _Context, np.random.Generator], np.ndarray]] = {
    1: _pick_favourite,
    2: _pick_explore,
    3: _pick_popular,
}


def _pick_items(
    cat: _Catalogue,
    users: _Users,
    ctx: _Context,
    organic: np.ndarray,
    source: np.ndarray,
    first: np.ndarray,
    rng: np.random.Generator,
) -> np.ndarray:
    """The dense item of every listen, by its source; artist runs continue the anchor artist of their run."""
    item = np.zeros(len(source), np.int64)
    for code, pick in _PICKERS.items():
        where = np.flatnonzero(source == code)
        item[where] = pick(cat, users, ctx.take(where), rng)
    starts = np.flatnonzero(first == np.arange(len(first)))
    anchor = np.zeros(len(source), np.int64)
    anchor[starts] = cat.artist_of[item[starts]]  # a recommended run follows its opening track's artist
    own = starts[organic[starts]]  # an organic run plays one of the user's (drifting) favourite artists
    anchor[own] = _drift_pick(users.fav_artist_start, users.fav_artists, ctx.user[own], ctx.tau[own], rng)
    on_artist = np.flatnonzero(source == 0)
    artist = anchor[first[on_artist]]
    lo, hi = cat.artist_start[artist], cat.artist_start[artist + 1]
    item[on_artist] = _pick_in_ranges(cat.within_cum, lo, hi, rng.random(len(on_artist)))
    return item


def _played_ratio(organic: np.ndarray, favourite: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Bimodal played_ratio_pct: skips (0-4, a third exactly 0), partial plays, full plays, replays."""
    n = len(organic)
    kind = np.where(~organic, 0, np.where(favourite, 1, 2))
    cum = np.cumsum(np.array([RATIO_MIX[k] for k in ("recommended", "favourite", "organic")]), axis=1)
    bucket = (rng.random(n)[:, None] > cum[kind]).sum(axis=1)  # 0 skip, 1 partial, 2 full, 3 replay
    u = rng.random(n)  # one uniform places the value inside whichever bucket the event fell in
    skip = np.where(u < ZERO_OF_SKIPS, 0, 1 + ((u - ZERO_OF_SKIPS) / (1 - ZERO_OF_SKIPS) * 4).astype(np.int64))
    full = np.where(u < 0.6, 100, 95 + ((u - 0.6) / 0.4 * 5).astype(np.int64))  # most full plays are 100
    partial = 5 + (90 * u**PARTIAL_SKEW).astype(np.int64)
    values = np.stack([skip, partial, full, 101 + (58 * u**3).astype(np.int64)])
    return values[bucket, np.arange(n)].astype(np.uint16)


def _timestamps(
    counts: np.ndarray, slot: np.ndarray, day: np.ndarray, played: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Seconds of each listen: sessions back to back in their day with 30+ minute gaps, tracks back to back
    in their session; floored to multiples of 5, so short skips share a timestamp with the next event."""
    duration = played + rng.integers(0, 5, len(slot))  # a few seconds of UI between tracks
    duration[rng.random(len(slot)) < SYNCED] = 0.0
    span = np.bincount(slot, weights=duration, minlength=counts.size).reshape(counts.shape)
    gap = (counts > 0) * (1_800 + rng.exponential(3 * 3_600, counts.shape))
    step = span + gap
    offset = np.cumsum(step, axis=-1) - step  # session start inside the day, before placing the day
    total = step.sum(axis=-1)
    day_start, day_end = _day_bounds()
    length = (day_end - day_start)[None, :]
    squeeze = np.minimum(1.0, length / np.maximum(total, 1.0))  # an overfull day is compressed into the day
    lead = rng.random(total.shape) * np.maximum(length - total, 0)
    session_start = (lead[..., None] + offset * squeeze[..., None]).ravel()
    ends = np.cumsum(duration)
    slot_begin = np.concatenate([[0], np.cumsum(counts.ravel())])[slot]
    before = ends - duration - np.concatenate([[0.0], ends])[slot_begin]  # played earlier in the session
    inside = session_start[slot] + before * squeeze.reshape(-1)[slot // SESSION_SLOTS]
    seconds = day_start[day] + np.minimum(inside, length[0, day] - 1)
    return (seconds // 5 * 5).astype(np.uint32)


# --- feedback events derived from the listens ---------------------------------------------------------------


@dataclass(frozen=True)
class _Pairs:
    """(user, item) pairs of a batch's listens: each pair's listens, in time order, as a range of `order`."""

    order: np.ndarray  # listen indices grouped by pair
    start: np.ndarray  # (P + 1,)

    @property
    def count(self) -> np.ndarray:
        return np.diff(self.start)


def _pairs(listens: _Listens) -> _Pairs:
    key = (listens.user.astype(np.uint64) << np.uint64(32)) | listens.item.astype(np.uint64)
    order = np.argsort(key, kind="stable")
    return _Pairs(order, _group_starts(key[order]))


def _weighted_sample(weights: np.ndarray, k: int, rng: np.random.Generator) -> np.ndarray:
    """k indices without replacement, with chances proportional to weights (Efraimidis-Spirakis keys)."""
    k = min(k, int((weights > 0).sum()))
    if k == 0:
        return np.zeros(0, np.int64)
    with np.errstate(divide="ignore"):
        keys = np.log(rng.random(len(weights))) / weights
    return np.argpartition(-keys, k - 1)[:k]


def _feedback(listens: _Listens, users: _Users, rng: np.random.Generator) -> dict[str, tuple[np.ndarray, ...]]:
    """Likes, dislikes, unlikes and undislikes as (user, timestamp, item, is_organic) arrays, unsorted."""
    pairs = _pairs(listens)
    count = pairs.count
    n = len(listens.user)
    liked = _weighted_sample(count.astype(np.float64), round(PER_LISTEN["likes"] * n), rng)
    liked = np.union1d(liked, _top_pair_of_silent_users(listens, users, pairs, liked))
    nth = (rng.random(len(liked)) * np.minimum(count[liked], 3)).astype(np.int64)  # one of the first plays
    first_play = pairs.order[pairs.start[:-1]]
    dislike_w = np.where(listens.ratio[first_play] < 5, 1.0, 0.01) / count.astype(np.float64) ** 2
    dislike_w[liked] = 0.0
    at = {
        "likes": pairs.order[pairs.start[liked] + nth],
        "dislikes": first_play[_weighted_sample(dislike_w, round(PER_LISTEN["dislikes"] * n), rng)],
    }
    out = {kind: (listens.user[i], listens.timestamp[i], listens.item[i]) for kind, i in at.items()}
    for kind, of in (("unlikes", "likes"), ("undislikes", "dislikes")):
        undo = at[of][rng.random(len(at[of])) < UNDO[kind]]
        later = _later_event(listens, users, undo, rng)
        keep = later >= 0
        out[kind] = (listens.user[undo[keep]], listens.timestamp[later[keep]], listens.item[undo[keep]])
    return {kind: (*cols, rng.random(len(cols[0])) >= RECOMMENDED[kind]) for kind, cols in out.items()}


def _top_pair_of_silent_users(listens: _Listens, users: _Users, pairs: _Pairs, liked: np.ndarray) -> np.ndarray:
    """The most played pair of each user without listens and without a like, so that every user shows up."""
    pair_user = listens.user[pairs.order[pairs.start[:-1]]]
    by_user = np.lexsort((-pairs.count, pair_user))  # each user's most played pair first
    top = by_user[_group_starts(pair_user[by_user])[:-1]]
    silent = ~users.listening
    silent[pair_user[liked]] = False
    return top[silent[pair_user[top]]]


def _later_event(listens: _Listens, users: _Users, at: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """For each listen index, a random later listen of the same user, strictly later in time; -1 if none."""
    key = (listens.user.astype(np.uint64) << np.uint64(32)) | listens.timestamp.astype(np.uint64)
    lo = np.searchsorted(key, key[at], side="right")
    hi = np.concatenate([[0], np.cumsum(users.n_events)])[listens.user[at] + 1]
    pick = lo + (rng.random(len(at)) * (hi - lo)).astype(np.int64)
    return np.where(lo < hi, pick, -1)


# --- tables -------------------------------------------------------------------------------------------------


def _batch_tables(cat: _Catalogue, users: _Users, uids: np.ndarray, rng: np.random.Generator) -> dict[str, pa.Table]:
    """The six flat tables of one user batch, each sorted by (uid, timestamp)."""
    listens = _generate_listens(cat, users, rng)
    feedback = _feedback(listens, users, rng)
    visible = users.listening[listens.user]
    # phantom users' listens are dropped; 0.5% of the others are written twice (exact duplicates)
    repeat = visible.astype(np.int64) * (1 + (rng.random(len(visible)) < DUPLICATES))
    keep = np.repeat(np.arange(len(visible)), repeat)
    item = listens.item[keep]
    columns = {
        "uid": uids[listens.user[keep]],
        "timestamp": listens.timestamp[keep],
        "item_id": cat.item_ids[item],
        "is_organic": listens.organic[keep],
        "played_ratio_pct": listens.ratio[keep],
        "track_length_seconds": cat.track_length[item],
    }
    tables = {"listens": _table(columns, "listens")}
    for kind, (user, timestamp, item, organic) in feedback.items():
        order = np.lexsort((timestamp, user))
        columns = {
            "uid": uids[user[order]],
            "timestamp": timestamp[order],
            "item_id": cat.item_ids[item[order]],
            "is_organic": organic[order],
        }
        tables[kind] = _table(columns, kind)
    tables["multi_event"] = _merge(tables)
    return tables


def _table(columns: dict[str, np.ndarray], event_file: str) -> pa.Table:
    schema = S.flat_schema(event_file)
    arrays = {f.name: pa.array(columns[f.name].astype(f.type.to_pandas_dtype()), f.type) for f in schema}
    return pa.table(arrays, schema=schema)


def _merge(tables: dict[str, pa.Table]) -> pa.Table:
    """multi_event: the five files merged in (uid, timestamp) order, listen columns null on other rows."""
    parts = [tables[f] for f in S.EVENT_TYPE_OF_FILE]  # listens first: EVENT_TYPES order
    code = np.repeat(np.arange(len(parts), dtype=np.int32), [p.num_rows for p in parts])
    column = {n: np.concatenate([p.column(n).to_numpy() for p in parts]) for n in S.BASE_COLUMNS}
    order = np.lexsort((column["timestamp"], column["uid"]))  # stable: listens first within a timestamp
    arrays = {n: pa.array(v[order]) for n, v in column.items()}
    is_listen = order < parts[0].num_rows
    for name, dtype in S.LISTEN_COLUMNS.items():
        values = np.zeros(len(order), dtype.to_pandas_dtype())
        values[is_listen] = parts[0].column(name).to_numpy()[order[is_listen]]
        arrays[name] = pa.array(values, dtype, mask=~is_listen)
    arrays["event_type"] = pa.DictionaryArray.from_arrays(pa.array(code[order]), pa.array(S.EVENT_TYPES))
    return pa.table(arrays, schema=S.flat_schema("multi_event"))


def _to_sequential(table: pa.Table, event_file: str) -> pa.Table:
    """One row per uid, every other column a list in time order (the table is sorted by uid, timestamp)."""
    uid = table.column("uid").to_numpy()
    starts = _group_starts(uid) if len(uid) else np.zeros(1, np.int64)
    offsets = pa.array(starts.astype(np.int32))
    columns = {"uid": pa.array(uid[starts[:-1]], pa.uint32())}
    for name in table.column_names[1:]:
        columns[name] = pa.ListArray.from_arrays(offsets, table.column(name).combine_chunks())
    return pa.table(columns).cast(S.sequential_schema(event_file))


# --- writing ------------------------------------------------------------------------------------------------


def _write_events(
    cfg: SynthConfig, cat: _Catalogue, root: Path, seed: int, bar: Progress
) -> tuple[dict[str, int], int, int]:
    """Generate user batch after user batch, writing flat and sequential files from the same tables.

    Memory: the catalogue plus one batch (cfg.batch_users users' events and their tables); nothing else grows.
    """
    layout = DatasetLayout(root, cfg.name)
    uids = _sparse_ids(_rng(seed, 1), cfg.n_users, MAX_UID - 1)
    heard = np.zeros(len(cat.item_ids), bool)
    dense_of = _dense_lookup(cat.item_ids)
    users_seen = 0
    with contextlib.ExitStack() as stack:
        sinks = {
            (fmt, f): stack.enter_context(
                io.ParquetSink(layout.event_path(f, fmt), _schema(fmt, f), ONE_ROW_GROUP, COMPRESSION)
            )
            for fmt in S.FORMATS
            for f in S.EVENT_FILES
        }
        for b, lo in enumerate(range(0, cfg.n_users, cfg.batch_users)):
            rng = _rng(seed, 2, b)
            batch_uids = uids[lo : lo + cfg.batch_users]
            tables = _batch_tables(cat, _make_users(cfg, cat, rng, len(batch_uids)), batch_uids, rng)
            for f, table in tables.items():
                sinks["flat", f].write(table)
                sinks["sequential", f].write(_to_sequential(table, f))
            heard[dense_of(tables["multi_event"].column("item_id").to_numpy())] = True
            users_seen += len(np.unique(tables["multi_event"].column("uid").to_numpy()))
            bar.update(len(batch_uids))
        rows = {f: sinks["flat", f].rows for f in S.EVENT_FILES}
    return rows, users_seen, int(heard.sum())


def _schema(fmt: str, event_file: str) -> pa.Schema:
    return S.flat_schema(event_file) if fmt == "flat" else S.sequential_schema(event_file)


def _dense_lookup(item_ids: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """raw item id -> dense index, by binary search over the sorted ids."""
    order = np.argsort(item_ids)
    sorted_ids = item_ids[order]
    return lambda raw: order[np.searchsorted(sorted_ids, raw)]


def _write_embeddings(cat: _Catalogue, root: Path, seed: int, chunk: int = 65_536) -> None:
    """embeddings.parquet sorted by item_id: genre + artist + item noise, so audio neighbours share listeners.

    82% of the items, the missing ones leaning to the unpopular tail. Written chunk by chunk of ids, one row
    group each (memory: a chunk of 2 x 128 float32 per item, ~70 MB).
    """
    rng = _rng(seed, 4)
    n_artists = len(cat.artist_start) - 1
    genre_of_artist = np.repeat(np.arange(len(cat.genre_artist_start) - 1), np.diff(cat.genre_artist_start))
    genre_centre = rng.normal(0.0, 1.0, (len(cat.genre_p), S.EMBEDDING_DIM)).astype(np.float32)
    artist_noise = rng.normal(0.0, 0.6, (n_artists, S.EMBEDDING_DIM)).astype(np.float32)
    artist_centre = genre_centre[genre_of_artist] + artist_noise
    popularity = np.diff(cat.item_cum)
    tail_rank = np.argsort(np.argsort(-popularity)) / len(popularity)  # 0 the most popular item, ~1 the least
    present = rng.random(len(popularity)) >= 2 * (1 - EMBEDDED) * tail_rank
    order = np.argsort(cat.item_ids)
    order = order[present[order]]
    with io.ParquetSink(root / S.EMBEDDINGS_FILE, S.EMBEDDINGS_SCHEMA, ONE_ROW_GROUP, COMPRESSION) as sink:
        for c, lo in enumerate(range(0, len(order), chunk)):
            dense = order[lo : lo + chunk]
            noise = _rng(seed, 5, c).normal(0.0, 0.5, (len(dense), S.EMBEDDING_DIM)).astype(np.float32)
            embed = artist_centre[cat.artist_of[dense]] + noise
            unit = embed / np.linalg.norm(embed, axis=1, keepdims=True)
            ids = pa.array(cat.item_ids[dense])
            sink.write(pa.table({"item_id": ids, "embed": _vectors(embed), "normalized_embed": _vectors(unit)}))


def _vectors(matrix: np.ndarray) -> pa.ListArray:
    offsets = pa.array(np.arange(0, matrix.size + 1, matrix.shape[1], dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(matrix.ravel()))


def _write_mappings(cat: _Catalogue, root: Path, rng: np.random.Generator) -> None:
    """artist_item_mapping (one artist per item) and album_item_mapping (albums of ~3 consecutive tracks of
    an artist, 10% of tracks also on a second album), in sparse raw ids, sorted like the release."""
    n_items = len(cat.item_ids)
    artist_ids = rng.permutation(_sparse_ids(rng, len(cat.artist_start) - 1, MAX_ARTIST_ID, low=1))
    _write_pairs(root / S.ARTIST_MAPPING_FILE, "artist_id", artist_ids[cat.artist_of], cat.item_ids)
    rank_in_artist = np.arange(n_items) - cat.artist_start[cat.artist_of]
    opens = (rank_in_artist == 0) | (rng.random(n_items) < 1 / ITEMS_PER_ALBUM)
    album = np.cumsum(opens) - 1
    n_albums = int(album[-1]) + 1
    album_ids = rng.permutation(_sparse_ids(rng, n_albums, max(MAX_ALBUM_ID, n_albums), low=1))
    extra = np.flatnonzero(rng.random(n_items) < SECOND_ALBUM)
    albums = np.concatenate([album, rng.integers(0, n_albums, len(extra))])
    items = np.concatenate([np.arange(n_items), extra])
    _write_pairs(root / S.ALBUM_MAPPING_FILE, "album_id", album_ids[albums], cat.item_ids[items])


def _write_pairs(path: Path, key: str, keys: np.ndarray, item_ids: np.ndarray) -> None:
    order = np.lexsort((item_ids, keys))
    keys_array, items_array = pa.array(keys[order], pa.uint32()), pa.array(item_ids[order], pa.uint32())
    io.write_parquet(pa.table({key: keys_array, "item_id": items_array}), path)
