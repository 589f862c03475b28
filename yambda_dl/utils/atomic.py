"""Atomic writes: a file or folder appears under its final name complete or not at all.

A writer gets a temporary path beside the final one (`atomic_path`), named so that a later run can tell a killed
writer's leftovers from a live one's (`temporary_name`, `remove_stale_temporaries`). Used by the data layer's
writers and caches (data/io.py) and by the run records (utils/runinfo.py).
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from pathlib import Path

logger = logging.getLogger(__name__)

# A temporary is named ".tmp-<final name>-<pid>-<tag>", tag = 4 hex digits of this host's name + 4 random ones, so
# that a later run can tell a dead process's leftovers (same host, pid not alive) from a live run's, even when the
# folder is on a file system shared by several machines (another host's temporaries are never judged by pid).
_TMP_NAME = re.compile(r"^\.tmp-(?P<name>.+)-(?P<pid>\d+)-(?P<host>[0-9a-f]{4})(?P<rand>[0-9a-f]{4})$")


def _host_tag() -> str:
    return hashlib.sha256(socket.gethostname().encode()).hexdigest()[:4]


def temporary_name(final_name: str) -> str:
    """A fresh temporary name for `final_name`, carrying this process's pid and host (see _TMP_NAME)."""
    return f".tmp-{final_name}-{os.getpid()}-{_host_tag()}{secrets.token_hex(2)}"


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by another user
        return True
    return True


def remove_path(path: Path) -> None:
    if path.is_dir() and not path.is_symlink():
        shutil.rmtree(path, ignore_errors=True)
    else:
        with contextlib.suppress(FileNotFoundError):
            path.unlink()


def remove_stale_temporaries(folder: Path | str, name: str | None = None, any_owner: bool = False) -> list[Path]:
    """Remove the `.tmp-*` files and folders in `folder` left by dead processes of this host; returns them.

    `name`: only the temporaries of this final name. `any_owner`: also those of live or other hosts' processes,
    for a caller that holds the name's build lock (no one else can be writing that name then). Names that do not
    carry a pid (other tools, older versions) are left alone: nothing proves their writer is gone.
    """
    folder = Path(folder)
    removed = []
    try:
        entries = list(folder.iterdir())
    except FileNotFoundError:
        return removed
    host = _host_tag()
    for entry in entries:
        match = _TMP_NAME.match(entry.name)
        if match is None or (name is not None and match["name"] != name):
            continue
        pid = int(match["pid"])
        dead = match["host"] == host and not _pid_alive(pid)
        if dead or (any_owner and not (match["host"] == host and pid == os.getpid())):
            remove_path(entry)
            removed.append(entry)
    if removed:
        logger.info("removed %d stale temporary file(s) of killed runs in %s", len(removed), folder)
    return removed


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temporary path beside `final`; on success rename it into place, on failure remove it.

    A killed run leaves at most a `.tmp-<name>-<pid>-<hex>` file or folder behind, never a half-written output under
    the final name; remove_stale_temporaries removes it on a later run. Works for files and folders (the caller
    creates what it needs at the yielded path). An existing folder under the final name is replaced; for caches that
    readers may hold open, use build_once instead.
    """
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(final.parent, final.name)  # a killed earlier write of this name: never a live one's
    tmp = final.parent / temporary_name(final.name)
    tmp.mkdir()
    target = tmp / final.name  # the written path keeps its name and extension
    try:
        yield target
        if final.is_dir() and not final.is_symlink():
            old = final.parent / temporary_name(final.name)
            os.replace(final, old)
            os.replace(target, final)
            remove_path(old)
        else:
            os.replace(target, final)
    finally:
        remove_path(tmp)
