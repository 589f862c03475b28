"""A run owns its folder: run.json says whose files these are and whether the run ended.

Lifecycle: `RunFolder(path, run_id).claim()` before any work (refuses a folder a live run holds, clears the previous
run's outputs, writes run.json "running"); `write_config` / `write_manifest` as the run goes; `finish(result)` writes
metrics.json and then run.json "finished" (or "refused"); `fail(error)` marks a run that raised. Every file is
written to a temporary path and renamed into place, so a reader sees a whole file or none. `read_run` is the reader's
side: it returns a finished run's files or raises `StaleRun` naming why the folder cannot be trusted.
"""

from __future__ import annotations

import errno
import fcntl
import fnmatch
import json
import logging
import os
import platform
import secrets
from datetime import datetime, timezone
from pathlib import Path
from typing import IO, Any

from yambda_dl.utils import runinfo
from yambda_dl.utils.atomic import remove_path

log = logging.getLogger(__name__)

RUN_FILE = "run.json"
CONFIG_FILE = "config.yaml"
MANIFEST_FILE = "manifest.json"
METRICS_FILE = "metrics.json"
CHECKPOINTS = "checkpoints"
LOCK_FILE = ".run.lock"  # flock-ed by the live run for its whole life; the kernel releases it when the run dies
# What a run (or its logger, Trainer and Hydra) writes into its folder: the only entries a new run removes. A folder
# holding anything else is not a run folder (a typo'd hydra.run.dir=. or a home folder) and is refused, never emptied.
RUN_ENTRIES = ("run.json", "config.yaml", "manifest.json", "metrics.json", "recommendations.parquet", CHECKPOINTS)
RUN_ENTRY_PATTERNS = ("*.log", ".hydra", "csv", "wandb", "lightning_logs", ".tmp-*", LOCK_FILE)
ENDED = ("finished", "refused")  # statuses whose outputs a report may read
STATUSES = ("running", *ENDED, "failed")


def new_run_id() -> str:
    """A run id unique across processes and machines: UTC time to the second plus 8 random hex digits."""
    return f"{datetime.now(timezone.utc):%Y%m%d-%H%M%S}-{secrets.token_hex(4)}"


class StaleRun(ValueError):
    """A run folder whose files do not belong together (or whose run did not end); the message says why."""


class RunFolderBusy(RuntimeError):
    """Another live run holds the folder."""


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's live process
        return True
    return True


def _is_run_entry(name: str) -> bool:
    return name in RUN_ENTRIES or any(fnmatch.fnmatchcase(name, pattern) for pattern in RUN_ENTRY_PATTERNS)


class RunFolder:
    """The folder of one run, identified by `run_id`; see the module docstring for the lifecycle."""

    def __init__(self, path: Path | str, run_id: str):
        self.path = Path(path)
        self.run_id = run_id
        self.started: str | None = None
        self._lock: IO[bytes] | None = None

    @property
    def checkpoints(self) -> Path:
        return self.path / CHECKPOINTS

    def claim(self, resume: bool = False, keep: tuple[str, ...] = ()) -> None:
        """Take the folder for this run before any work.

        A folder held by a live run (its lock taken, or run.json "running" with a live pid on this host) is an error.
        Otherwise the previous run's outputs are removed, except `checkpoints/` when `resume` is true and the names in
        `keep` (e.g. Hydra's `.hydra/` and job log, written for this run before it starts), and run.json is written
        with status "running".
        """
        self.path.mkdir(parents=True, exist_ok=True)
        lock = open(self.path / LOCK_FILE, "ab")  # held open until finish()/fail()
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as error:
            lock.close()
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            busy = f"{self.path} is in use by another live run{self._holder()}; choose another folder"
            raise RunFolderBusy(busy) from None
        previous = self._previous_run()
        if (
            previous.get("status") == "running"
            and previous.get("host") == platform.node()
            and isinstance(previous.get("pid"), int)
            and previous["pid"] != os.getpid()
            and _pid_alive(previous["pid"])
        ):
            lock.close()
            raise RunFolderBusy(f"{self.path} is in use by another live run{self._holder()}; choose another folder")
        foreign = sorted(entry.name for entry in self.path.iterdir() if not _is_run_entry(entry.name))
        if foreign:
            lock.close()
            shown = ", ".join(foreign[:5]) + (f" and {len(foreign) - 5} more" if len(foreign) > 5 else "")
            raise RunFolderBusy(
                f"{self.path} holds files that no run writes ({shown}); a run owns its folder: choose an empty or "
                "new folder (hydra.run.dir=...), or remove them"
            )
        self._lock = lock
        kept = {LOCK_FILE, *keep, *((CHECKPOINTS,) if resume else ())}
        removed = [entry.name for entry in self.path.iterdir() if entry.name not in kept]
        for name in removed:
            remove_path(self.path / name)
        if removed and previous:
            log.info("run folder %s: removed run %s's outputs (%s)", self.path, previous.get("run_id"), len(removed))
        if resume and self.checkpoints.is_dir():  # a killed checkpoint write leaves a temporary file behind
            for tmp in self.checkpoints.glob(".tmp-*"):
                remove_path(tmp)
        self.started = _now()
        self._write_run("running")

    def _previous_run(self) -> dict[str, Any]:
        try:
            data = json.loads((self.path / RUN_FILE).read_text())
        except (OSError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def _holder(self) -> str:
        run = self._previous_run()
        if not run:
            return ""
        return f" (run {run.get('run_id')}, pid {run.get('pid')} on {run.get('host')}, started {run.get('started')})"

    def _write_run(self, status: str) -> None:
        assert status in STATUSES, status
        runinfo.write_json(
            {
                "run_id": self.run_id,
                "status": status,
                "started": self.started,
                "ended": None if status == "running" else _now(),
                "pid": os.getpid(),
                "host": platform.node(),
            },
            self.path / RUN_FILE,
        )

    def write_config(self, config: dict[str, Any]) -> None:
        """config.yaml (resolved), with this run's id as its top-level `run_id`."""
        import yaml

        data = {"run_id": self.run_id, **{k: v for k, v in config.items() if k != "run_id"}}
        runinfo.write_text(yaml.safe_dump(data, sort_keys=False), self.path / CONFIG_FILE)

    def write_manifest(self, manifest: dict[str, Any]) -> None:
        """manifest.json (data fingerprint, seeds, versions, ...) with this run's id."""
        runinfo.write_json({"run_id": self.run_id, **manifest}, self.path / MANIFEST_FILE)

    def finish(self, result: dict[str, Any], status: str = "finished") -> None:
        """metrics.json, then run.json with the final status: a reader who sees "finished" finds every file."""
        if status not in ENDED:
            raise ValueError(f"status must be one of {ENDED}, got {status!r}")
        runinfo.write_json({"run_id": self.run_id, **result}, self.path / METRICS_FILE)
        self._write_run(status)
        self._release()

    def fail(self) -> None:
        """Mark a run that raised: run.json "failed" (its other files, if any, are not to be read)."""
        if self.started is not None:
            self._write_run("failed")
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.close()  # closing the file drops the flock
            self._lock = None


def _load(path: Path, name: str) -> Any:
    file = path / name
    if not file.is_file():
        raise StaleRun(f"{path}: no {name}")
    try:
        if name.endswith(".yaml"):
            import yaml

            return yaml.safe_load(file.read_text())
        return json.loads(file.read_text())
    except (OSError, ValueError) as error:
        raise StaleRun(f"{path}: unreadable {name} ({error})") from error


def read_run(path: Path | str) -> dict[str, Any]:
    """A finished or refused run's {"metrics", "config", "manifest", "run"}; StaleRun(reason) for anything else."""
    path = Path(path)
    run = _load(path, RUN_FILE)
    if not isinstance(run, dict) or run.get("status") not in ENDED:
        status = run.get("status") if isinstance(run, dict) else None
        raise StaleRun(f"{path}: run {run.get('run_id') if isinstance(run, dict) else None} did not end ({status})")
    files = {"metrics": METRICS_FILE, "config": CONFIG_FILE, "manifest": MANIFEST_FILE}
    loaded = {key: _load(path, name) for key, name in files.items()}
    for key, data in loaded.items():
        other = data.get("run_id") if isinstance(data, dict) else None
        if other != run.get("run_id"):
            raise StaleRun(f"{path}: {files[key]} belongs to run {other}, run.json to run {run.get('run_id')}")
    return {**loaded, "run": run}
