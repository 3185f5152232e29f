"""The error hierarchy: every failure the mirror reports, each carrying its data.

MirrorError
├── ConfigError            (file, key, problem)          -> exit 2
├── LockedError            (path)                        -> exit 3
├── UpstreamError          (url)
│   ├── ProjectNotFound    (project)   404 for a listed project: deleted or renamed
│   ├── StaleUpstream      (url, expected, got)  a CDN served an older serial
│   ├── UpstreamUnavailable(url, status)  5xx, 429, timeouts, resets after retries
│   └── BadUpstreamData    (url, problem) a body that does not parse or is unsafe
├── IntegrityError         (url, expected, got)  a body whose hash does not match
├── UnsafePath             (path)      a name or URL that would leave the tree
├── StorageError           (path, problem)
│   └── MissingFile        (path)      a file the storage does not hold (any more)
├── PluginError            (plugin, key, problem)        -> exit 2
├── UsageError             (problem)   a command that cannot run as asked -> exit 2
├── BundleError            (bundle, problem)  an export or import refused
└── SnapshotError          (path, problem)
"""

from __future__ import annotations

import errno


class MirrorError(Exception):
    """Root of every error this package raises on purpose."""


class ConfigError(MirrorError):
    """A configuration file that cannot be used: names the file, the key and the problem."""

    def __init__(self, file: str, key: str | None, problem: str) -> None:
        self.file = file
        self.key = key
        self.problem = problem
        where = f"{file}: [{key}]" if key else file
        super().__init__(f"{where}: {problem}")


class LockedError(MirrorError):
    """Another process holds the mirror's lock."""

    def __init__(self, path: str) -> None:
        self.path = path
        super().__init__(f"another bandersnatch-clone run holds the lock {path}")


class UpstreamError(MirrorError):
    """The upstream did not give a usable answer."""

    def __init__(self, url: str, message: str) -> None:
        self.url = url
        super().__init__(f"{message} ({url})")


class ProjectNotFound(UpstreamError):
    """404 for a project: it was deleted or renamed upstream."""

    def __init__(self, url: str, project: str) -> None:
        self.project = project
        super().__init__(url, f"project {project!r} not found upstream")


class StaleUpstream(UpstreamError):
    """A response whose serial is lower than the listing promised (a CDN lagging behind)."""

    def __init__(self, url: str, expected: int, got: int) -> None:
        self.expected = expected
        self.got = got
        super().__init__(url, f"stale response: serial {got}, expected at least {expected}")


class UpstreamUnavailable(UpstreamError):
    """5xx, 429, timeouts or connection errors that outlasted the retries."""

    def __init__(self, url: str, problem: str, status: int | None = None) -> None:
        self.status = status
        self.problem = problem
        super().__init__(url, problem)


class BadUpstreamData(UpstreamError):
    """A response that does not parse, breaks the protocol or is unsafe to use."""

    def __init__(self, url: str, problem: str) -> None:
        self.problem = problem
        super().__init__(url, problem)


class IntegrityError(MirrorError):
    """A downloaded body whose hash does not match what the upstream advertised."""

    def __init__(self, url: str, expected: str, got: str) -> None:
        self.url = url
        self.expected = expected
        self.got = got
        super().__init__(f"sha256 mismatch for {url}: expected {expected}, got {got}")


class UnsafePath(MirrorError):
    """A name, filename or URL that would place something outside the mirror tree."""

    def __init__(self, path: str, problem: str = "unsafe path") -> None:
        self.path = path
        super().__init__(f"{problem}: {path!r}")


class StorageError(MirrorError):
    """The disk refused: full, read-only, permissions."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")

    @classmethod
    def from_os(cls, path: object, exc: OSError) -> StorageError:
        """The operator's words for the errors a full or read-only disk gives."""
        reason = {
            errno.ENOSPC: "no space left on device",
            errno.EROFS: "read-only file system",
            errno.EACCES: "permission denied",
            errno.EDQUOT: "disk quota exceeded",
        }.get(exc.errno or 0, exc.strerror or str(exc))
        return cls(str(path), reason)


class MissingFile(StorageError):
    """A read of a file the storage does not hold (any more)."""

    def __init__(self, path: str) -> None:
        super().__init__(path, "no such file")


class PluginError(MirrorError):
    """A filter plugin that cannot be loaded or configured."""

    def __init__(self, plugin: str, key: str | None, problem: str) -> None:
        self.plugin = plugin
        self.key = key
        self.problem = problem
        where = f"plugin {plugin!r}" + (f", key {key!r}" if key else "")
        super().__init__(f"{where}: {problem}")


class UsageError(MirrorError):
    """A command asked for something the mirror's state cannot give (no previous export to
    continue from, a serial the mirror has not reached)."""

    def __init__(self, problem: str) -> None:
        self.problem = problem
        super().__init__(problem)


class BundleError(MirrorError):
    """An air-gap bundle that cannot be written or is refused: damaged, tampered with, out of
    order, or unsafe. An import that raises it has left the mirror as it was."""

    def __init__(self, bundle: str, problem: str) -> None:
        self.bundle = bundle
        self.problem = problem
        super().__init__(f"{bundle}: {problem}")


class SnapshotError(MirrorError):
    """A snapshot that cannot be made consistent, or cannot be made of hard links there."""

    def __init__(self, path: str, problem: str) -> None:
        self.path = path
        self.problem = problem
        super().__init__(f"{path}: {problem}")
