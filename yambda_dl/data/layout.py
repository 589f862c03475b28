"""Where Yambda files live: a dataset root in the Hugging Face layout, and the download from the hub.

    ROOT/{flat,sequential}/{SIZE}/{listens,likes,dislikes,unlikes,undislikes,multi_event}.parquet
    ROOT/embeddings.parquet, ROOT/artist_item_mapping.parquet, ROOT/album_item_mapping.parquet

The item side files (embeddings, maps) are the root's unless the data config's `side_files` names others.
SIZE is a release size (50m, 500m, 5b) or the name of a synthetic dataset written by `yambda-data synth`.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from yambda_dl.data import schema as S
from yambda_dl.data.io import DataFileError

HF_REPO_ID = "yandex/yambda"
# The marker `yambda-data synth` writes at a synthetic root: {"name", "seed", "complete", ...} (data/synthetic.py)
SYNTHETIC_MARKER = "SYNTHETIC.json"
_NAME = re.compile(r"^[a-z0-9][a-z0-9_.-]*$")


def default_cache_dir(root: Path | str) -> Path:
    """Where a dataset root's splits are cached unless a run names another folder (ROOT/.cache/splits)."""
    return Path(root) / ".cache" / "splits"


@dataclass(frozen=True)
class SideFiles:
    """The item side files of a dataset: audio embeddings and the artist / album maps (data config `side_files`).

    Each is the file at the dataset root unless the data config names another (for instance the vectors of another
    audio model): a model reaches them through the split's views, never through a path of its own.
    """

    embeddings: Path
    artist_mapping: Path
    album_mapping: Path

    @classmethod
    def at_root(cls, root: Path | str, **paths: Path | str | None) -> SideFiles:
        """The root's files, with any of `embeddings`, `artist_mapping`, `album_mapping` given as another path."""
        unknown = sorted(set(paths) - set(SIDE_FILE_NAMES))
        if unknown:
            raise ValueError(f"unknown side file(s) {unknown}; valid choices: {', '.join(SIDE_FILE_NAMES)}")
        root = Path(root).expanduser()
        return cls(
            **{
                key: Path(paths[key]).expanduser() if paths.get(key) else root / name
                for key, name in SIDE_FILE_NAMES.items()
            }
        )

    @classmethod
    def of_event_file(cls, event_path: Path | str) -> SideFiles:
        """The default side files of the root that holds an event file (ROOT/{flat,sequential}/SIZE/FILE.parquet)."""
        return cls.at_root(Path(event_path).parents[2])


SIDE_FILE_NAMES = {
    "embeddings": S.EMBEDDINGS_FILE,
    "artist_mapping": S.ARTIST_MAPPING_FILE,
    "album_mapping": S.ALBUM_MAPPING_FILE,
}


@dataclass(frozen=True)
class DatasetLayout:
    root: Path
    size: str
    # data config `side_files`: null = the file at the root (the release's layout)
    embeddings_file: Path | None = None
    artist_mapping_file: Path | None = None
    album_mapping_file: Path | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "root", Path(self.root).expanduser())
        if not _NAME.match(self.size):
            raise ValueError(
                f"invalid dataset size {self.size!r}: use one of {', '.join(S.RELEASE_SIZES)} or a "
                f"synthetic dataset's name (lower-case letters, digits, '_', '-', '.')"
            )

    @classmethod
    def with_side_files(cls, root: Path | str, size: str, side_files: dict | None = None) -> DatasetLayout:
        """A layout whose side files are the data config's `side_files` ({embeddings, artist_mapping,
        album_mapping}: a path, or null for the root's file); an unknown key is an error naming the valid ones."""
        side = {key: value for key, value in (side_files or {}).items()}
        unknown = sorted(set(side) - set(SIDE_FILE_NAMES))
        if unknown:
            raise ValueError(f"unknown data.side_files key(s) {unknown}; valid choices: {', '.join(SIDE_FILE_NAMES)}")
        return cls(Path(root), size, **{f"{key}_file": Path(v) if v else None for key, v in side.items()})

    @property
    def is_release(self) -> bool:
        return self.size in S.RELEASE_SIZES

    def event_path(self, event_file: str, fmt: str = "flat") -> Path:
        S.check_event_file(event_file)
        S.check_format(fmt)
        return self.root / fmt / self.size / f"{event_file}.parquet"

    @property
    def side_files(self) -> SideFiles:
        """The embeddings and maps this dataset's models read: the root's, or the files the data config names."""
        return SideFiles.at_root(
            self.root,
            embeddings=self.embeddings_file,
            artist_mapping=self.artist_mapping_file,
            album_mapping=self.album_mapping_file,
        )

    @property
    def embeddings_path(self) -> Path:
        return self.side_files.embeddings

    @property
    def artist_mapping_path(self) -> Path:
        return self.side_files.artist_mapping

    @property
    def album_mapping_path(self) -> Path:
        return self.side_files.album_mapping

    def how_to_get(self) -> str:
        """A command that brings the missing files: download, or generate (again, if the root says it is done)."""
        if self.is_release:
            return f"download it with `yambda-data download --size {self.size} --root {self.root}`"
        command = f"yambda-data synth --preset {self.size} --root {self.root}"
        marker = self._synthetic_marker()
        if marker is None:
            return f"generate it with `{command}`"
        if marker.get("name") != self.size:
            return (
                f"{self.root} holds synthetic dataset {marker.get('name')!r} ({SYNTHETIC_MARKER}), not "
                f"{self.size!r}: generate {self.size!r} under another root with `yambda-data synth --preset "
                f"{self.size} --root OTHER_ROOT`"
            )
        if marker.get("synth_args"):
            # the marker's own arguments (preset, seed, overrides) make the same dataset again, and the generator
            # regenerates a root whose marker says complete but whose files are missing
            args = str(marker["synth_args"]).split(" ", 2)  # "--preset NAME --seed S [--set ...]": --root after NAME
            root = shlex.quote(str(self.root))
            if len(args) == 3 and args[0] == "--preset":
                return f"regenerate it with `yambda-data synth --preset {args[1]} --root {root} {args[2]}`"
            return f"regenerate it with `yambda-data synth {marker['synth_args']} --root {root}`"
        # a marker of an older generator (no synth_args): it skips a root marked complete unless told to overwrite
        seed = marker.get("seed", 0)
        overwrite = " --overwrite" if marker.get("complete") else ""
        return f"regenerate it with `{command} --seed {seed}{overwrite}`"

    def _synthetic_marker(self) -> dict | None:
        """The synthetic marker at the root, or None (no marker, or an unreadable one)."""
        try:
            marker = json.loads((self.root / SYNTHETIC_MARKER).read_text())
        except (OSError, ValueError):
            return None
        return marker if isinstance(marker, dict) else None

    def require(self, event_files: Iterable[str], fmt: str = "flat") -> list[Path]:
        """The paths of the given event files; a clear error if any is missing."""
        paths = [self.event_path(e, fmt) for e in event_files]
        missing = [p for p in paths if not p.is_file()]
        if missing:
            raise DataFileError(f"missing {', '.join(map(str, missing))}: {self.how_to_get()}")
        return paths

    def has(self, event_file: str, fmt: str = "flat") -> bool:
        return self.event_path(event_file, fmt).is_file()


def hub_filenames(
    size: str,
    formats: Iterable[str] = ("flat",),
    events: Iterable[str] = S.EVENT_FILES,
    embeddings: bool = False,
    mappings: bool = False,
) -> list[str]:
    """The repository paths of the files asked for, validated against the release's layout."""
    if size not in S.RELEASE_SIZES:
        raise ValueError(f"unknown release size {size!r}; valid choices: {', '.join(S.RELEASE_SIZES)}")
    names = []
    for fmt in formats:
        S.check_format(fmt)
        for event in events:
            S.check_event_file(event)
            names.append(f"{fmt}/{size}/{event}.parquet")
    if embeddings:
        names.append(S.EMBEDDINGS_FILE)
    if mappings:
        names += [S.ARTIST_MAPPING_FILE, S.ALBUM_MAPPING_FILE]
    return names


def download(
    size: str,
    root: Path | str,
    formats: Iterable[str] = ("flat",),
    events: Iterable[str] = S.EVENT_FILES,
    embeddings: bool = False,
    mappings: bool = False,
    revision: str | None = None,
    repo_id: str = HF_REPO_ID,
) -> list[Path]:
    """Fetch only the files asked for from the hub into ROOT, keeping the repository's layout.

    huggingface_hub writes into an `.incomplete` file and resumes it when the download is run again, and skips files
    that are already complete, so an interrupted download is finished by running the same command.
    """
    from huggingface_hub import hf_hub_download  # imported here: the hub client is needed only for downloads

    root = Path(root).expanduser()
    paths = []
    for name in hub_filenames(size, formats, events, embeddings, mappings):
        local = hf_hub_download(repo_id=repo_id, filename=name, repo_type="dataset", revision=revision, local_dir=root)
        paths.append(Path(local))
    return paths
