"""generate(): a synthetic dataset written once into its root, safely when several processes ask at once.

The root is built in a temporary folder beside it and renamed into place under a lock (io.build_once), so a reader
never sees a half-written root and concurrent first uses generate it once. SYNTHETIC.json, the root's marker, names
what the root holds (name, size, behaviour overrides, seed, generator version) and how to regenerate it.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from yambda_dl.data import io
from yambda_dl.data import schema as S
from yambda_dl.data.layout import SYNTHETIC_MARKER, DatasetLayout
from yambda_dl.data.synthetic.catalogue import build_catalogue
from yambda_dl.data.synthetic.config import PRESETS, SynthConfig, resolve_config
from yambda_dl.data.synthetic.sampling import rng
from yambda_dl.data.synthetic.writers import write_embeddings, write_events, write_mappings
from yambda_dl.utils.progress import Progress

logger = logging.getLogger(__name__)

# 2: weekly charts of hits_per_week short-lived hits, flatter artist popularity
# 3: events of every type in both target days for any size and seed (guarantee.py); a damaged root is regenerated
# 4: new releases (Behaviour.new_releases, release_days): items first heard in the last days, each with a vector
VERSION = 4
MARKER_FILE = SYNTHETIC_MARKER  # layout.py reads it too, for its hints


@dataclass(frozen=True)
class SynthSummary:
    """What generate() wrote: rows per event file, users, distinct items, seconds taken and where."""

    name: str
    root: Path
    rows: dict[str, int]
    users: int
    items: int
    seconds: float


def generate(
    preset: str | SynthConfig,
    root: Path | str,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    overrides: dict[str, object] | None = None,
) -> SynthSummary:
    """Write a synthetic dataset named after the preset under `root` in the Yambda layout (docs/data.md).

    Deterministic by (config, overrides, seed). `overrides` replaces size or behaviour fields (see
    parse_overrides). Regenerating the same dataset is a no-op unless `overwrite`; a root made by an older
    generator, or missing one of its files, is regenerated; a root that holds another dataset (synthetic or real)
    or other files is refused. Safe to call from several processes at once: one generates, the others wait and
    return its summary.
    """
    cfg = resolve_config(preset, overrides)
    root = Path(root).expanduser()
    identity = _identity(cfg, seed)
    # a complete root is never replaced but by an explicit overwrite, so it can be read without the lock (and a
    # read-only dataset folder works); anything else is decided again under the lock
    if not overwrite and root.exists() and _is_complete(root, cfg, identity, overwrite=False, quiet=True):
        return _held_summary(root)
    with io.build_once(root, lambda path: _is_complete(path, cfg, identity, overwrite)) as tmp:
        if tmp is not None:
            return _generate_into(tmp, cfg, seed, progress, identity, root)
    return _held_summary(root)  # another process built it while we waited for the lock


def _held_summary(root: Path) -> SynthSummary:
    return _summary_from_json(json.loads((root / MARKER_FILE).read_text())["summary"], root)


def _generate_into(
    folder: Path, cfg: SynthConfig, seed: int, progress: bool, identity: dict, root: Path
) -> SynthSummary:
    """Every file of the dataset into `folder` (renamed to `root` afterwards), the marker last."""
    bar = Progress(f"synth {cfg.name}", total=cfg.n_users, unit="users", enabled=progress)
    catalogue = build_catalogue(cfg, rng(seed, 0))
    rows, users, items = write_events(cfg, catalogue, folder, seed, bar)
    write_embeddings(catalogue, folder, seed, cfg.behaviour)
    write_mappings(catalogue, folder, rng(seed, 3), cfg.behaviour)
    summary = SynthSummary(cfg.name, root, rows, users, items, round(bar.elapsed, 1))
    marker = {**identity, "complete": True, "summary": _summary_json(summary), "synth_args": _synth_args(cfg, seed)}
    with io.atomic_path(folder / MARKER_FILE) as path:
        path.write_text(json.dumps(marker, indent=1, sort_keys=True))
    bar.summary(f"{rows['multi_event']:,} rows, {users:,} users, {items:,} items -> {root}")
    return summary


def expected_files(root: Path, name: str) -> list[Path]:
    """Every file generate() writes under `root` for dataset `name`, the marker first."""
    layout = DatasetLayout(root, name)
    events = [layout.event_path(f, fmt) for fmt in S.FORMATS for f in S.EVENT_FILES]
    return [root / MARKER_FILE, *events, layout.embeddings_path, layout.artist_mapping_path, layout.album_mapping_path]


# --- the root's marker --------------------------------------------------------------------------------------


def _identity(cfg: SynthConfig, seed: int) -> dict:
    """What makes a dataset this dataset, as the marker stores it (JSON types: tuples become lists)."""
    identity = {"name": cfg.name, "config": cfg.size(), "overrides": cfg.overrides(), "seed": int(seed)}
    return json.loads(json.dumps({**identity, "version": VERSION}))


def _is_complete(root: Path, cfg: SynthConfig, identity: dict, overwrite: bool, quiet: bool = False) -> bool:
    """True if `root` holds this very dataset, whole; False if it must be (re)generated (absent, empty, unfinished,
    damaged, from an older generator, or `overwrite`), saying why unless `quiet`; raise if it holds anything else.
    """
    say = logger.debug if quiet else logger.warning
    marker = root / MARKER_FILE
    if not marker.is_file():
        found = sorted(root.iterdir()) if root.is_dir() else [root]
        if found:  # never removed: it may be a real dataset or anything else of the user's
            raise ValueError(
                f"{root} already holds files not made by the generator ({found[0]}); choose a new or empty root "
                f"for synthetic dataset {cfg.name!r}"
            )
        return False
    try:
        held = json.loads(marker.read_text())
    except (OSError, ValueError):
        say("%s is unreadable; regenerating the dataset", marker)
        return False
    held.setdefault("overrides", {})  # markers of version 2 and older name no overrides
    differs = [k for k in identity if held.get(k) != identity[k]]
    if differs == ["version"] and held.get("version", 0) < identity["version"]:
        say("%s was made by generator version %s; regenerating it", root, held.get("version"))
        return False  # the same dataset from an older generator: regenerated, never mixed with the new one
    if held.get("name") != identity["name"] or (differs and not overwrite):
        raise ValueError(
            f"{root} holds synthetic dataset {_describe(held)}; refusing to write {_describe(identity)} "
            f"there (embeddings and mappings belong to the whole root): use another root"
            + ("" if held.get("name") != identity["name"] else ", or overwrite=True (--overwrite) to replace it")
        )
    if overwrite or not held.get("complete"):
        return False
    missing = [p for p in expected_files(root, cfg.name) if not p.is_file()]
    if missing:
        say("%s is missing %s; regenerating the dataset", root, missing[0])
        return False
    return True


def _describe(identity: dict) -> str:
    overrides = identity.get("overrides") or {}
    return (
        f"{identity.get('name')!r} (seed {identity.get('seed')}, version {identity.get('version')}, "
        f"config {identity.get('config')}" + (f", overrides {overrides})" if overrides else ")")
    )


def _synth_args(cfg: SynthConfig, seed: int) -> str:
    """The `yambda-data synth` arguments (all but --root) that regenerate this dataset: a preset, the seed, and a
    `--set` for every size field that differs from the preset's and every behaviour override."""
    size = cfg.size()

    def differing(preset: SynthConfig) -> dict:
        return {k: v for k, v in size.items() if v != getattr(preset, k)}

    base = min(PRESETS.values(), key=lambda preset: len(differing(preset)))  # the preset it was made from, likely
    sets = differing(base) | cfg.overrides()
    args = [f"--preset {base.name}", f"--seed {int(seed)}"]
    args += [f"--set {k}={','.join(map(str, v)) if isinstance(v, tuple) else v}" for k, v in sets.items()]
    return " ".join(args)


def _summary_json(summary: SynthSummary) -> dict:
    fields = ("name", "rows", "users", "items", "seconds")
    return {f: getattr(summary, f) for f in fields}


def _summary_from_json(data: dict, root: Path) -> SynthSummary:
    return SynthSummary(data["name"], root, dict(data["rows"]), data["users"], data["items"], data["seconds"])
