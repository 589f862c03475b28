"""What a synthetic dataset is made of: its size (SynthConfig, the presets) and its behaviour (Behaviour, the shares
and shapes of docs/data.md's synthetic statistics), and `--set NAME=VALUE` overrides of either.

The fixed facts (id spaces, the 301-day calendar here; the time axis and the protocol's windows in data/protocol.py)
are constants, not knobs: they are the Yambda release's and the evaluation protocol's, and every dataset shares them.
"""

from __future__ import annotations

import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from yambda_dl.data.layout import DatasetLayout

# --- id spaces and calendar (the release's, docs/data.md) ---------------------------------------------------
MAX_UID = 1_000_000
MAX_ITEM_ID = 9_390_623
MAX_ARTIST_ID = 1_290_000
MAX_ALBUM_ID = 3_370_000
N_DAYS = 301  # days counted back from protocol.LAST_TIMESTAMP: the last is exactly the test day, the first is partial
N_WEEKS = (N_DAYS + 6) // 7
TREND_GROUPS = N_WEEKS + 2  # peak weeks -1 .. N_WEEKS: trends fading when the data starts, or still rising


@dataclass(frozen=True)
class Behaviour:
    """The generator's behaviour: shares are docs/data.md's figures of the real Yambda, shapes were tuned against
    `yambda-data stats` on the `small` preset. Every field can be overridden (`yambda-data synth --set NAME=VALUE`);
    the defaults reproduce the statistics the tests check."""

    # --- catalogue: genres -> artists -> items --------------------------------------------------------------
    items_per_artist: float = 7.0
    artist_size_sigma: float = 1.0  # log-normal spread of artists' catalogue sizes
    genre_size_sigma: float = 0.5  # log-normal spread of genres' artist counts
    artist_pareto: float = 1.25  # artists' popularity: the top 1% of items carry about half the listens
    within_artist_zipf: float = 2.8  # an artist's plays go mostly to its first tracks: a third of the items heard once
    hits_per_week: int = 30  # items that trend, peaking in each week: a chart's worth, whatever the catalogue's size
    hit_pareto: float = 5.0  # sizes of hits: a few lead each week's chart, none reaching every user (top reach ~0.6)
    items_per_album: float = 3.0
    second_album: float = 0.1  # items also on a compilation: about 1.1 albums per item
    embedded: float = 0.82  # items with an embedding, the missing ones leaning to the unpopular tail
    genre_spread: float = 1.0  # embedding: genre centres' scale
    artist_spread: float = 0.6  # embedding: an artist's offset from its genre
    item_spread: float = 0.5  # embedding: a track's offset from its artist
    # new releases: items first heard near the end of the window (each with a vector), the cold-start case of
    # content models; a listen drawn for a release before its release day plays the artist's first track instead
    new_releases: float = 0.01  # share of the catalogue, drawn by popularity among tracks after an artist's first
    release_days: int = 7  # release days are uniform over the last `release_days` days (the test day included)
    track_length_median: float = 200.0  # seconds; log-normal, so p90 is about 275 s
    track_length_sigma: float = 0.25
    long_tracks: float = 0.003  # a thin tail of long tracks, uniform in log between the two bounds
    long_track_seconds: tuple[int, int] = (400, 2_500)  # the upper bound is also the longest track
    # --- users and their calendar ---------------------------------------------------------------------------
    listen_sigma: float = 1.0  # log-normal spread of listens per user ("sigma about 1 fits roughly")
    no_listens: float = 0.08  # users without listens: their listens are generated (for likes), then dropped
    phantom_median: int = 300  # median listens generated for a user without listens
    max_listens: int = 150_000
    days_scale: int = 9_500  # active days = 301 * (1 - exp(-listens / days_scale)): 3,000 listens -> ~82 days
    recency: tuple[float, float] = (0.6, 1.4)  # weight of the oldest and the newest day when picking active days
    day_sigma: float = 0.7  # log-normal spread of a user's listens over their active days
    last_day_share: float = 0.5  # of listening users, active on the test day (46% of all users in the release)
    last_day_boost: float = 1.3  # the test day is a busier day than most: ~34 Listen+ per active user
    extra_sessions: float = 1.2  # Poisson mean of a day's sessions beyond the first
    session_slots: int = 6  # at most this many listening sessions a day
    session_sigma: float = 0.8  # log-normal spread of a day's listens over its sessions
    session_gap: int = 1_800  # seconds: the least gap between sessions (a longer gap starts a new session)
    session_gap_mean: int = 10_800  # seconds: mean of the exponential extra gap
    ui_seconds: int = 5  # up to this many seconds between tracks (exclusive)
    synced: float = 0.06  # listens logged in the same second as the one before (offline plays synced in a burst)
    # --- tastes ---------------------------------------------------------------------------------------------
    genre_primary: float = 0.75  # picks in the user's primary genre; the rest in the secondary one
    favourite_artists: tuple[int, int, int] = (5, 60, 400)  # least, listens per extra artist, most
    favourite_tracks: tuple[int, int, int] = (10, 30, 1_500)  # least, listens per extra track, most
    drift: float = 0.7  # favourites rotate through 70% of the user's list over their history: recency matters
    # --- runs and where each listen comes from --------------------------------------------------------------
    restart: float = 0.3  # chance that a listen opens a new run (new anchor artist) inside a session: runs of ~3
    organic: float = 0.51  # listens: 49% recommendation-driven
    favourite: float = 0.45  # organic listens that re-listen a favourite track
    explore: float = 0.025  # organic listens of a uniform item of the user's genres: the long tail heard once
    popular_now: float = 0.6  # recommended listens taking what is popular this week (the rest stay on the artist)
    trending: float = 0.5  # share of the popular-now picks that follow weekly trends rather than all-time popularity
    trend_weeks: float = 0.9  # geometric parameter of |peak week - this week|: a hit lives about a week, then fades
    # --- played_ratio_pct: chances of (skip 0-4, partial 5-94, full 95-100, replayed 101-159) by listen kind ---
    ratio_recommended: tuple[float, float, float, float] = (0.19, 0.165, 0.64, 0.005)
    ratio_favourite: tuple[float, float, float, float] = (0.18, 0.17, 0.645, 0.005)
    ratio_organic: tuple[float, float, float, float] = (0.362, 0.224, 0.409, 0.005)
    zero_of_skips: float = 0.31  # 7.4% of listens are exactly 0 out of 24% skips
    partial_skew: float = 2.0  # partial plays lean short: 5 + 90 u^2, so only ~30% of them reach Listen+
    full_at_100: float = 0.6  # full plays that are exactly 100
    # --- feedback -------------------------------------------------------------------------------------------
    duplicates: float = 0.005  # listens written twice (exact duplicates)
    likes_per_listen: float = 0.019
    dislikes_per_listen: float = 0.0023
    like_among_first: int = 3  # a like comes at one of the first plays of the pair
    dislike_played: float = 0.01  # weight of a dislike on a pair whose first play was not a skip (a skip: 1)
    unlikes: float = 0.37  # of likes, taken back at a later event
    undislikes: float = 0.2  # of dislikes, taken back at a later event
    recommended_likes: float = 0.42  # is_organic = 0 shares of each feedback kind
    recommended_dislikes: float = 0.48
    recommended_unlikes: float = 0.05
    recommended_undislikes: float = 0.10

    def __post_init__(self) -> None:
        problems = [p for f in dataclasses.fields(self) if (p := _check_value(f.name, getattr(self, f.name)))]
        if problems:
            raise ValueError(f"invalid synthetic behaviour: {'; '.join(problems)}")


# fields whose values are chances or shares, in [0, 1]; every other number must be positive
_SHARES = frozenset(
    {
        "second_album", "embedded", "new_releases", "long_tracks", "no_listens", "last_day_share", "synced",
        "genre_primary", "drift", "restart", "organic", "favourite", "explore", "popular_now", "trending",
        "trend_weeks", "zero_of_skips", "full_at_100", "duplicates", "likes_per_listen", "dislikes_per_listen",
        "dislike_played", "unlikes", "undislikes", "recommended_likes", "recommended_dislikes", "recommended_unlikes",
        "recommended_undislikes",
    }
)  # fmt: skip


def _check_value(name: str, value: object) -> str | None:
    """Why a Behaviour field's value is invalid, or None."""
    if name.startswith("ratio_"):
        if any(v < 0 for v in value) or not math.isclose(sum(value), 1.0, abs_tol=1e-9):
            return f"{name}={value} must be 4 non-negative chances summing to 1"
        return None
    values = value if isinstance(value, tuple) else (value,)
    if name in _SHARES:
        low = 0.0 if name != "trend_weeks" else math.ulp(0.0)  # a geometric law needs a positive chance
        return None if all(low <= v <= 1.0 for v in values) else f"{name}={value} must lie in [0, 1]"
    if not all(v > 0 for v in values):
        return f"{name}={value} must be positive"
    if name == "long_track_seconds" and value[0] >= value[1]:
        return f"{name}={value} must be (shortest, longest) with shortest < longest"
    return None


@dataclass(frozen=True)
class SynthConfig:
    """The size of a synthetic dataset, and its behaviour (the defaults follow docs/data.md)."""

    name: str
    n_users: int
    n_items: int  # catalogue size; about 3/4 of it gets heard
    median_listens: float  # per listening user
    n_genres: int
    # Memory grows linearly with batch_users (one batch's events and tables are held): 256 users at Yambda's
    # ~4,650 listens each peak at ~0.8 GB. Random streams are per batch, so it is part of the data's identity.
    batch_users: int
    behaviour: Behaviour = field(default_factory=Behaviour)

    def __post_init__(self) -> None:
        DatasetLayout(Path("."), self.name)  # validates the name as a dataset folder name
        sizes = {"n_users": self.n_users, "n_items": self.n_items, "n_genres": self.n_genres}
        sizes |= {"median_listens": self.median_listens, "batch_users": self.batch_users}
        bad = [f"{k}={v}" for k, v in sizes.items() if not v > 0]
        if bad:
            raise ValueError(f"synthetic dataset {self.name!r}: {', '.join(bad)} must be positive")

    def size(self) -> dict:
        """The size fields (the dataset's identity beside its behaviour overrides)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self) if f.name != "behaviour"}

    def overrides(self) -> dict:
        """The behaviour fields that differ from the defaults: a dataset's identity names only those."""
        default = Behaviour()
        return {
            f.name: getattr(self.behaviour, f.name)
            for f in dataclasses.fields(Behaviour)
            if getattr(self.behaviour, f.name) != getattr(default, f.name)
        }


PRESETS: dict[str, SynthConfig] = {
    "tiny": SynthConfig("tiny", n_users=50, n_items=800, median_listens=60, n_genres=4, batch_users=16),
    "small": SynthConfig("small", n_users=1_000, n_items=200_000, median_listens=2_500, n_genres=48, batch_users=128),
    "50m": SynthConfig("50m", n_users=10_000, n_items=1_250_000, median_listens=3_000, n_genres=128, batch_users=256),
}


def resolve_config(preset: str | SynthConfig, overrides: Mapping[str, object] | None = None) -> SynthConfig:
    """A preset's config, or the config given, with `overrides` (size or behaviour fields) applied; an unknown
    preset or field raises, listing the valid ones."""
    if isinstance(preset, SynthConfig):
        cfg = preset
    elif preset in PRESETS:
        cfg = PRESETS[preset]
    else:
        raise ValueError(f"unknown synthetic preset {preset!r}; valid choices: {', '.join(PRESETS)}")
    return with_overrides(cfg, overrides or {})


def field_types() -> dict[str, object]:
    """Every overridable field, size then behaviour, with its type."""
    size = typing.get_type_hints(SynthConfig)
    size.pop("behaviour")
    return size | typing.get_type_hints(Behaviour)


def with_overrides(cfg: SynthConfig, overrides: Mapping[str, object]) -> SynthConfig:
    """`cfg` with some size or behaviour fields replaced (values already typed, e.g. by parse_overrides)."""
    valid = field_types()
    unknown = [name for name in overrides if name not in valid]
    if unknown:
        raise ValueError(f"unknown synthetic setting {unknown[0]!r}; valid names: {', '.join(valid)}")
    if not overrides:
        return cfg
    behaviour = {k: v for k, v in overrides.items() if k in typing.get_type_hints(Behaviour)}
    size = {k: v for k, v in overrides.items() if k not in behaviour}
    return dataclasses.replace(cfg, **size, behaviour=dataclasses.replace(cfg.behaviour, **behaviour))


def parse_overrides(items: Sequence[str]) -> dict[str, object]:
    """`NAME=VALUE` strings (the CLI's repeated `--set`) -> typed values; tuples are comma-separated.

    One-line errors name the item and the valid names or the expected type."""
    valid = field_types()
    out: dict[str, object] = {}
    for item in items:
        name, sep, text = item.partition("=")
        name = name.strip()
        if not sep:
            raise ValueError(f"--set {item!r}: expected NAME=VALUE; valid names: {', '.join(valid)}")
        if name not in valid:
            raise ValueError(f"--set {item!r}: unknown setting {name!r}; valid names: {', '.join(valid)}")
        out[name] = _parse_value(name, text.strip(), valid[name])
    return out


def _parse_value(name: str, text: str, kind: object) -> object:
    """One value of type `kind` (str, int, float or a tuple of them) from its text."""
    if typing.get_origin(kind) is tuple:
        parts = typing.get_args(kind)
        pieces = text.split(",")
        if len(pieces) != len(parts):
            raise ValueError(f"--set {name}={text}: expected {len(parts)} comma-separated numbers")
        return tuple(_parse_value(name, p.strip(), t) for p, t in zip(pieces, parts, strict=True))
    if kind is str:
        return text
    try:
        number = float(text)
        if kind is int:
            if not number.is_integer():
                raise ValueError
            return int(number)
        return number
    except ValueError:
        raise ValueError(f"--set {name}={text}: expected {'an integer' if kind is int else 'a number'}") from None
