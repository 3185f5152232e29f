"""The TOML config file, validated into frozen dataclasses; every error names file, key, problem."""

from __future__ import annotations

import dataclasses
import difflib
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Literal, cast
from urllib.parse import urlsplit

import tomli_w

from bandersnatch_clone.errors import ConfigError

ListingMethod = Literal["simple", "xmlrpc"]


@dataclass(frozen=True, slots=True)
class MirrorConfig:
    """The ``[mirror]`` table: where the mirror lives, what it mirrors and how hard it pulls."""

    #: Root of the mirror tree; absolute (relative paths resolve against the config file's folder).
    directory: Path
    #: Base URL of the index: simple API at ``<upstream>/simple/``, XML-RPC at ``<upstream>/pypi``.
    upstream: str = "https://pypi.org"
    #: Replaces the scheme, host (and path prefix) of file URLs; "" = use the upstream's URLs.
    download_url: str = ""
    #: How changed projects are found: "simple" (PEP 691 JSON listing) or "xmlrpc" (changelog).
    listing: ListingMethod = "simple"
    #: Concurrent metadata requests.
    metadata_workers: int = 16
    #: Concurrent file downloads (and ``.metadata`` files). On a link with 50 ms a request,
    #: concurrency sets the pace: uv downloads 50 files at once by default; bandersnatch
    #: allows at most 10, one file at a time per project.
    download_workers: int = 48
    #: Of those, how many may be large files (1 MiB and up) at once. A large file is paced by
    #: bandwidth, not by round trips: more of them at once adds no throughput once the link is
    #: full, only buffers and CPU (on loopback, 48 big transfers at once cost 9% more CPU
    #: than 16). Small files keep the other slots, so a big release does not stall them.
    large_file_workers: int = 16
    #: Seconds: socket read timeout per request.
    timeout: float = 30.0
    #: Seconds: time allowed to open a connection.
    connect_timeout: float = 10.0
    #: Attempts after the first for retryable failures.
    retries: int = 5
    #: Also write the JSON API copies ``web/json/<name>`` and ``web/pypi/<name>/json``.
    json: bool = False
    #: False = index-only mirror whose pages link to the upstream's files.
    release_files: bool = True
    #: Absolute base URL for file links in pages; "" = relative links.
    root_uri: str = ""
    #: Abort the run at the first project that fails.
    stop_on_error: bool = False
    #: Remove projects that disappear upstream.
    delete_removed_projects: bool = True
    #: The largest share of the mirror's projects one run removes because they left the
    #: upstream's listing; more (and more than 10) and it removes none of them, says so and
    #: exits 4 until ``mirror --allow-removals``. 1 = no limit.
    removal_guard: float = 0.05
    #: Remove files no longer linked by their project's page.
    cleanup: bool = True
    #: Appended to the User-Agent header (e.g. a contact address).
    user_agent_extra: str = ""
    #: After each run, write the paths it created or changed here (for rsync --files-from).
    diff_file: Path | None = None
    #: Append "-<epoch seconds>" to the diff file's name, so each run writes its own.
    diff_append_epoch: bool = False


@dataclass(frozen=True, slots=True)
class StorageConfig:
    """The ``[storage]`` table: which backend holds the tree, and each backend's own table
    (``[storage.s3]``), checked by that backend when it is opened (see `storage.loader`)."""

    #: A name in the ``bandersnatch_clone.storage.v1`` entry-point group.
    backend: str = "filesystem"
    #: ``[storage.<name>]`` tables, by backend name, read-only.
    options: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )


@dataclass(frozen=True, slots=True)
class Config:
    """A whole configuration file: the mirror settings and the filter plugins' settings."""

    #: The file this came from, as given (used in error messages).
    path: Path
    mirror: MirrorConfig
    #: ``[plugins] enabled``: filter plugin names, in the order given.
    plugins_enabled: tuple[str, ...] = ()
    #: Every other top-level table, by name. Read-only all the way down: tables are
    #: `MappingProxyType`, arrays are tuples.
    plugin_sections: Mapping[str, Mapping[str, object]] = field(
        default_factory=lambda: MappingProxyType({}), hash=False
    )
    #: ``[storage]``: where the tree is written (the state always stays in ``directory``).
    storage: StorageConfig = field(default_factory=StorageConfig)

    def override(self, changes: Mapping[str, object], *, source: str = "command line") -> Config:
        """A copy with some ``[mirror]`` fields replaced, validated like the file's values.

        For command-line overrides: errors name ``source`` as the file, and a relative
        ``directory`` resolves against the current directory.
        """
        base = Path.cwd()
        # Any: each value has been checked against its field's rule.
        checked: dict[str, Any] = {
            key: _check_option(source, key, value, base)
            for key, value in changes.items()
            if _known_mirror_key(source, key)
        }
        return dataclasses.replace(self, mirror=dataclasses.replace(self.mirror, **checked))


@dataclass(frozen=True, slots=True)
class _Rule:
    """How one ``[mirror]`` key is checked."""

    kind: Literal["bool", "int", "float", "str", "url", "path"]
    low: float | None = None
    high: float | None = None
    choices: tuple[str, ...] = ()
    #: For URLs and paths: whether "" (meaning "not set") is allowed.
    optional: bool = False


_RULES: Mapping[str, _Rule] = MappingProxyType(
    {
        "directory": _Rule("path"),
        "upstream": _Rule("url"),
        "download_url": _Rule("url", optional=True),
        "listing": _Rule("str", choices=("simple", "xmlrpc")),
        "metadata_workers": _Rule("int", 1, 64),
        "download_workers": _Rule("int", 1, 128),
        "large_file_workers": _Rule("int", 1, 128),
        "timeout": _Rule("float", 0.1, 3600.0),
        "connect_timeout": _Rule("float", 0.1, 3600.0),
        "retries": _Rule("int", 0, 20),
        "json": _Rule("bool"),
        "release_files": _Rule("bool"),
        "root_uri": _Rule("url", optional=True),
        "stop_on_error": _Rule("bool"),
        "delete_removed_projects": _Rule("bool"),
        "removal_guard": _Rule("float", 0.0, 1.0),
        "cleanup": _Rule("bool"),
        "user_agent_extra": _Rule("str"),
        "diff_file": _Rule("path", optional=True),
        "diff_append_epoch": _Rule("bool"),
    }
)

# bandersnatch's names for the same settings, so its users get a pointed hint.
_BANDERSNATCH_NAMES: Mapping[str, str] = MappingProxyType(
    {
        "master": "upstream",
        "workers": "download_workers",
        "download-mirror": "download_url",
        "download_mirror": "download_url",
        "stop-on-error": "stop_on_error",
        "release-files": "release_files",
        "diff-file": "diff_file",
        "diff-append-epoch": "diff_append_epoch",
    }
)


def _describe(value: object) -> str:
    """``value``'s TOML type in words, for 'expected X, got Y' messages."""
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    if type(value) in names:
        return f"{names[type(value)]} ({value!r})"
    if isinstance(value, list | tuple):
        return "an array"
    return "a table" if isinstance(value, Mapping) else type(value).__name__


def _suggest(key: str, known: tuple[str, ...]) -> str:
    """' (did you mean ...?)' for an unknown key, or ''."""
    if key in _BANDERSNATCH_NAMES and _BANDERSNATCH_NAMES[key] in known:
        return f" (bandersnatch calls it {key!r}; here it is {_BANDERSNATCH_NAMES[key]!r})"
    close = difflib.get_close_matches(key.replace("-", "_"), known, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""


def _unknown(file: str, dotted: str, key: str, known: tuple[str, ...]) -> ConfigError:
    return ConfigError(file, dotted, f"unknown key{_suggest(key, known)}")


def _known_mirror_key(file: str, key: str) -> bool:
    if key not in _RULES:
        raise _unknown(file, f"mirror.{key}", key, tuple(_RULES))
    return True


def _check_url(file: str, key: str, value: str, optional: bool) -> str:
    if optional and value == "":
        return ""
    try:
        parts = urlsplit(value)
        _ = parts.port  # raises ValueError on a port that is not a number
    except ValueError as exc:
        raise ConfigError(file, key, f"invalid URL {value!r}: {exc}") from exc
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ConfigError(
            file, key, f"expected an http:// or https:// URL with a host, got {value!r}"
        )
    if any(ch.isspace() for ch in value) or parts.query or parts.fragment:
        raise ConfigError(
            file, key, f"URL must not contain spaces, a query or a fragment: {value!r}"
        )
    return value.rstrip("/")


def _check_option(file: str, name: str, value: object, base: Path) -> object:
    """One ``[mirror]`` value, checked against its rule and converted to its field type."""
    rule, key = _RULES[name], f"mirror.{name}"
    if rule.kind == "bool":
        if not isinstance(value, bool):
            raise ConfigError(file, key, f"expected a boolean (true/false), got {_describe(value)}")
        return value
    if rule.kind in ("int", "float"):
        numeric = (int, float) if rule.kind == "float" else (int,)
        if isinstance(value, bool) or not isinstance(value, numeric):
            words = "an integer" if rule.kind == "int" else "a number"
            raise ConfigError(file, key, f"expected {words}, got {_describe(value)}")
        number = float(value) if rule.kind == "float" else value
        low, high = rule.low, rule.high
        if (low is not None and number < low) or (high is not None and number > high):
            raise ConfigError(file, key, f"out of range: {value!r} is not in {low:g}..{high:g}")
        return number
    if not isinstance(value, str):
        raise ConfigError(file, key, f"expected a string, got {_describe(value)}")
    if rule.choices and value not in rule.choices:
        allowed = ", ".join(repr(c) for c in rule.choices)
        raise ConfigError(file, key, f"expected one of {allowed}, got {value!r}")
    if rule.kind == "url":
        return _check_url(file, key, value, rule.optional)
    if rule.kind == "path":
        if rule.optional and value == "":
            return None
        if not value.strip():
            raise ConfigError(file, key, "expected a directory path, got an empty string")
        return Path(os.path.abspath(base / Path(value).expanduser()))
    return value


def _freeze(value: object) -> object:
    """A read-only copy of a TOML value: tables become mapping proxies, arrays tuples."""
    if isinstance(value, dict):
        return MappingProxyType({k: _freeze(v) for k, v in value.items()})
    if isinstance(value, list):
        return tuple(_freeze(v) for v in value)
    return value


def _table(file: str, key: str, value: object) -> Mapping[str, object]:
    if not isinstance(value, Mapping):
        raise ConfigError(file, key, f"expected a table, got {_describe(value)}")
    return cast(Mapping[str, object], value)


def _mirror(file: str, table: Mapping[str, object], base: Path) -> MirrorConfig:
    for key in table:
        _known_mirror_key(file, key)
    if "directory" not in table:
        raise ConfigError(file, "mirror.directory", "missing required key")
    # Any: each value has been checked against its field's rule.
    values: dict[str, Any] = {k: _check_option(file, k, v, base) for k, v in table.items()}
    return MirrorConfig(**values)


def _plugins_enabled(file: str, table: Mapping[str, object]) -> tuple[str, ...]:
    for key in table:
        if key != "enabled":
            raise _unknown(file, f"plugins.{key}", key, ("enabled",))
    enabled = table.get("enabled", [])
    if not isinstance(enabled, list) or not all(isinstance(n, str) and n for n in enabled):
        raise ConfigError(
            file, "plugins.enabled", f"expected an array of plugin names, got {_describe(enabled)}"
        )
    names = tuple(cast(list[str], enabled))
    for name in names:
        if names.count(name) > 1:
            raise ConfigError(file, "plugins.enabled", f"plugin {name!r} is listed twice")
    return names


def _storage(file: str, table: Mapping[str, object]) -> StorageConfig:
    backend = table.get("backend", "filesystem")
    if not isinstance(backend, str) or not backend:
        raise ConfigError(
            file, "storage.backend", f"expected a backend name, got {_describe(backend)}"
        )
    options: dict[str, Mapping[str, object]] = {}
    for key, value in table.items():
        if key == "backend":
            continue
        if not isinstance(value, Mapping):
            raise _unknown(file, f"storage.{key}", key, ("backend",))
        options[key] = cast(Mapping[str, object], _freeze(value))
    return StorageConfig(backend, MappingProxyType(options))


def config_from_mapping(data: Mapping[str, object], path: str | os.PathLike[str]) -> Config:
    """Validate parsed TOML (or an equivalent mapping) into a `Config`.

    ``path`` names the source in errors, and its folder is where a relative directory resolves.
    """
    file, source = os.fspath(path), Path(path)
    base = source.parent
    sections: dict[str, Mapping[str, object]] = {}
    for key, value in data.items():
        if key in ("mirror", "plugins", "storage"):
            continue
        if key in _RULES and not isinstance(value, Mapping):
            raise ConfigError(
                file, key, f"top-level key: did you mean 'mirror.{key}' (under [mirror])?"
            )
        tables = ("mirror", "plugins", "storage")
        typo = difflib.get_close_matches(key, [t for t in tables if t not in data])
        if typo:
            raise ConfigError(file, key, f"unknown table (did you mean [{typo[0]}]?)")
        sections[key] = cast(Mapping[str, object], _freeze(_table(file, key, value)))
    mirror = _mirror(file, _table(file, "mirror", data.get("mirror", {})), base)
    enabled = _plugins_enabled(file, _table(file, "plugins", data.get("plugins", {})))
    storage = _storage(file, _table(file, "storage", data.get("storage", {})))
    return Config(source, mirror, enabled, MappingProxyType(sections), storage)


def load_config(path: str | os.PathLike[str]) -> Config:
    """Read and validate a TOML configuration file."""
    file = os.fspath(path)
    try:
        raw = Path(path).read_bytes()
    except FileNotFoundError as exc:
        raise ConfigError(file, None, "file not found") from exc
    except OSError as exc:
        raise ConfigError(file, None, f"cannot read the file: {exc.strerror or exc}") from exc
    try:
        data = tomllib.loads(raw.decode("utf-8"))
    except UnicodeDecodeError as exc:
        raise ConfigError(file, None, f"not UTF-8 text (TOML must be UTF-8): {exc}") from exc
    except tomllib.TOMLDecodeError as exc:
        # tomllib's message ends with "(at line L, column C)".
        raise ConfigError(file, None, f"TOML syntax error: {exc}") from exc
    return config_from_mapping(data, path)


_MIRROR_HELP = """\
# [mirror]: where the mirror lives, what it mirrors and how hard it pulls.
#
#   directory                root of the mirror tree; nginx serves <directory>/web. A relative path
#                            is taken relative to this file's folder.
#   upstream                 the index to mirror. Its simple API is <upstream>/simple/, its XML-RPC
#                            changelog <upstream>/pypi.
#   download_url             optional: fetch files from here instead of the host in the upstream's
#                            file URLs (e.g. a closer files mirror). "" = use the upstream's URLs.
#   listing                  how changed projects are found: "simple" (the PEP 691 JSON project
#                            listing, the default) or "xmlrpc" (the upstream's changelog).
#   metadata_workers         concurrent metadata requests (1..64; default 16).
#   download_workers         concurrent file downloads (1..128; default 48, uv's is 50).
#                            Lower both on a small link, or to be kinder to the upstream.
#   large_file_workers       of those, how many may be files of 1 MiB or more (1..128;
#                            default 16): big files are paced by bandwidth, small ones by
#                            round trips. Raise it on a fast link far from the upstream.
#   timeout                  seconds to wait for data on an open connection, per request.
#   connect_timeout          seconds to wait for a connection to open.
#   retries                  attempts after the first for timeouts, resets, 5xx and 429 (0..20).
#   json                     also write JSON API copies: web/json/<name>, web/pypi/<name>/json.
#   release_files            false = an index-only mirror whose pages link to the upstream's files.
#   root_uri                 absolute base URL for file links in pages; "" = relative links.
#   stop_on_error            abort the run at the first project that fails (otherwise failed
#                            projects are reported, exit code 1, and retried next run).
#   delete_removed_projects  remove projects that disappear upstream.
#   removal_guard            the largest share of the mirror one run may remove because it left
#                            the upstream listing, or because the upstream answers 404 for it
#                            (default 0.05); more (and more than 10) and the run removes none,
#                            exits 4, and waits for `mirror --allow-removals`. A listing cut
#                            short, or a proxy failing every page, must not empty the mirror.
#                            1 = no guard.
#   cleanup                  remove files no longer linked by their project's page.
#   user_agent_extra         appended to the User-Agent, e.g. a contact address for the upstream.
#   diff_file                after each run, write the absolute paths it created or changed here,
#                            one a line (rsync --files-from); "" = none. See docs/airgap.md.
#   diff_append_epoch        append "-<epoch seconds>" to diff_file's name, one file per run.
"""

_PLUGINS_HELP = """\
# [plugins]: the filter plugins to apply, by name, in this order; none by default. Each plugin
# reads its own top-level table. For example, to mirror only two projects, replace the
# [plugins] table below with:
#
# [plugins]
# enabled = ["allowlist_project"]
# [allowlist]
# packages = ["requests", "idna"]
#
"""


_STORAGE_HELP = """\
# [storage]: where the tree (web/, what nginx serves) is written. The default is the mirror
# directory itself. To write it into an S3-compatible object store instead (the state: status,
# ledger, journal, lock, stays in `directory`), install `pip install 'bandersnatch-clone[s3]'`
# and uncomment:
#
# [storage]
# backend = "s3"
# [storage.s3]
# bucket = "my-mirror"                 # required
# prefix = "pypi"                      # keys become pypi/web/simple/...; "" = the bucket's root
# endpoint_url = "https://s3.example.com"  # "" = AWS S3
# region = "us-east-1"
# addressing_style = "auto"            # "path" (https://host/bucket/key) or "virtual"
# access_key_id = ""                   # both empty = the usual AWS chain (environment
# secret_access_key = ""               #   variables, ~/.aws, instance role)
# lock_ttl = 300                       # seconds a crashed run on another host blocks the bucket
# conditional_writes = true            # false: the store ignores If-None-Match (see README)
# put_extra_args = { ServerSideEncryption = "AES256" }
#
"""


def render_starter_config(directory: str) -> str:
    """The commented config that ``bandersnatch-clone init`` writes: every key at its default."""
    mirror: dict[str, object] = {"directory": directory}
    for f in dataclasses.fields(MirrorConfig):
        if f.name != "directory":
            mirror[f.name] = "" if f.default is None else f.default
    return "\n".join(
        [
            "# bandersnatch-clone configuration (TOML).",
            "# Read by `bandersnatch-clone mirror`; run that from cron or a systemd timer.",
            "",
            _MIRROR_HELP + tomli_w.dumps({"mirror": mirror}),
            _PLUGINS_HELP + tomli_w.dumps({"plugins": {"enabled": []}}),
            _STORAGE_HELP,
        ]
    )
