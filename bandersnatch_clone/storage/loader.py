"""Finding the configured storage backend through entry points, like the filter plugins."""

from __future__ import annotations

import difflib
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from importlib.metadata import EntryPoint, entry_points
from pathlib import Path
from typing import Protocol, cast

from bandersnatch_clone.config import Config
from bandersnatch_clone.errors import ConfigError, StorageError
from bandersnatch_clone.state import MirrorLock
from bandersnatch_clone.storage import Storage

GROUP = "bandersnatch_clone.storage.v1"
INSTALL_S3 = "pip install 'bandersnatch-clone[s3]'"
#: The backends this distribution ships, found even when its metadata is not installed (a
#: source checkout run with ``python -m``).
BUILTIN = {
    "filesystem": "bandersnatch_clone.storage.filesystem:backend",
    "s3": "bandersnatch_clone.storage.s3:backend",
}


class Backend(Protocol):
    """What an entry point of the group names: checks its ``[storage.<name>]`` table at once
    (`ConfigError`), and returns a context manager that opens the storage on entry."""

    def __call__(self, config: Config, /) -> AbstractAsyncContextManager[Storage]: ...


def discover() -> dict[str, EntryPoint]:
    found = {name: EntryPoint(name, value, GROUP) for name, value in BUILTIN.items()}
    found.update({ep.name: ep for ep in entry_points(group=GROUP)})
    return found


def open_storage(config: Config) -> AbstractAsyncContextManager[Storage]:
    """The configured backend with its options checked; ``async with`` it to connect."""
    name = config.storage.backend
    file, key = str(config.path), "storage.backend"
    available = discover()
    if name not in available:
        close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.5)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        names = ", ".join(sorted(available))
        raise ConfigError(file, key, f"unknown storage backend {name!r}{hint}; installed: {names}")
    entry = available[name]
    try:
        loaded = entry.load()
    except ModuleNotFoundError as e:
        fix = INSTALL_S3 if name == "s3" else f"install the distribution that provides {name!r}"
        raise ConfigError(
            file, key, f"the {name!r} backend needs the module {e.name!r}: {fix}"
        ) from e
    except Exception as e:  # any import-time failure of a third-party backend
        raise ConfigError(file, key, f"cannot import {entry.value}: {e!r}") from e
    if not callable(loaded):
        raise ConfigError(file, key, f"{entry.value} is not a storage backend")
    return cast(Backend, loaded)(config)


@asynccontextmanager
async def held_tree(
    config: Config, must_exist: Path | None = None, missing: str = "the directory does not exist"
) -> AsyncIterator[Storage]:
    """The tree of an existing mirror, with the mirror's lock and the tree's own held (an object
    store's): what `verify`, `delete` and `export` work under. The storage options are checked
    before anything is touched; `StorageError` when `must_exist` (default: the mirror
    directory) is not a folder, `LockedError` when a lock is taken."""
    directory = config.mirror.directory
    opened = open_storage(config)
    if not (must_exist or directory).is_dir():
        raise StorageError(str(directory), f"no mirror here ({missing})")
    with MirrorLock(directory):
        async with opened as tree, tree.lock():
            yield tree
