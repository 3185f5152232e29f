"""``config convert``: a bandersnatch.conf (INI) as our TOML, with a warning for each loss."""

from __future__ import annotations

import configparser
from collections.abc import Callable, Mapping
from types import MappingProxyType

import tomli_w

from bandersnatch_clone.config import config_from_mapping
from bandersnatch_clone.errors import ConfigError
from bandersnatch_clone.filters.loader import discover

Value = str | int | float | bool | list[str]
Table = dict[str, Value]

# [mirror]: bandersnatch key -> (our key, kind). Kinds: str, url, int, float, bool.
_MIRROR: Mapping[str, tuple[str, str]] = MappingProxyType(
    {
        "directory": ("directory", "str"),
        "master": ("upstream", "url"),
        "workers": ("download_workers", "int"),
        "timeout": ("timeout", "float"),
        "json": ("json", "bool"),
        "release-files": ("release_files", "bool"),
        "root_uri": ("root_uri", "url"),
        "stop-on-error": ("stop_on_error", "bool"),
        "download-mirror": ("download_url", "url"),
        "diff-file": ("diff_file", "str"),
        "diff-append-epoch": ("diff_append_epoch", "bool"),
    }
)
# [mirror] keys with no equivalent: the value that needs no warning (None: any value warns),
# and what to tell the user.
_MIRROR_DROPPED: Mapping[str, tuple[str | None, str]] = MappingProxyType(
    {
        "hash-index": (
            "false",
            "hash-index is not supported: project pages are always at "
            "web/simple/<name>/ as pip expects",
        ),
        "storage-backend": ("filesystem", "only the filesystem storage backend is supported"),
        "simple-format": ("all", "both the HTML and the JSON simple pages are always written"),
        "global-timeout": (
            None,
            "there is no whole-run timeout; per-request 'timeout' and 'connect_timeout' apply",
        ),
        "verifiers": (None, "'verify' sets its own concurrency"),
        "compare-method": ("hash", "existing files are always compared by sha256"),
        "digest_name": ("sha256", "files are always checked with sha256"),
        "keep_index_versions": ("0", "old versions of index pages are not kept"),
        "log-config": (None, "logging goes to stderr; use -v/-q and your service manager"),
        "proxy": (None, "proxy settings are not supported"),
        "cleanup": (
            "false",
            "bandersnatch's cleanup (legacy non-normalised directories) is "
            "not needed; our 'cleanup' (remove unlinked files) is on by default",
        ),
        "download-mirror-no-fallback": (
            "true",
            "download_url has no fallback: files are fetched only from it",
        ),
        "delete-packages": (None, "use 'delete_removed_projects' (on by default)"),
    }
)
_RENAMED_PLUGINS = {
    "whitelist_project": "allowlist_project",
    "whitelist_release": "allowlist_release",
    "blacklist_project": "blocklist_project",
    "blacklist_release": "blocklist_release",
}
_RENAMED_TABLES = {"whitelist": "allowlist", "blacklist": "blocklist"}
# Plugin tables: table -> key -> kind ("list", "names" (a list whose "# ..." is a comment),
# "str", "int", "size"); "*" stands for any key.
_TABLES: Mapping[str, Mapping[str, str]] = MappingProxyType(
    {
        "allowlist": {"packages": "names", "requirements": "names", "requirements_path": "str"},
        "blocklist": {"packages": "names", "platforms": "names"},
        "filter_regex": {"packages": "list", "releases": "list"},
        "filter_prerelease": {"packages": "names"},
        "latest_release": {"keep": "int", "sort_by": "str"},
        "size_project_metadata": {"max_package_size": "size"},
        "regex_project_metadata": {"*": "list"},
        "regex_release_file_metadata": {"*": "list"},
        "version_range_project_metadata": {"*": "list"},
        "version_range_release_file_metadata": {"*": "list"},
    }
)
# Which plugins read a shared table; the other tables are read by the plugin of their name.
_READERS: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "allowlist": (
            *("allowlist_project", "allowlist_release", "project_requirements"),
            *("project_requirements_pinned", "size_project_metadata"),
        ),
        "blocklist": ("blocklist_project", "blocklist_release", "exclude_platform"),
        "filter_regex": ("regex_project", "regex_release"),
        "filter_prerelease": ("prerelease_release",),
    }
)
_STORAGE_TABLES = frozenset({"s3", "swift"})


def _lines(text: str, *, comments: bool) -> list[str]:
    """A multi-line INI value as its non-empty lines (``# ...`` dropped if ``comments``)."""
    found = []
    for line in text.splitlines():
        if comments:
            line = line.split("#", 1)[0]
        line = line.strip()
        if line:
            found.append(line)
    return found


def _scalar(kind: str, text: str, where: str, warn: Callable[[str], None]) -> Value | None:
    text = text.strip()
    try:
        if kind == "bool":
            return configparser.ConfigParser.BOOLEAN_STATES[text.lower()]
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except (KeyError, ValueError):
        warn(f"{where} = {text!r} is not a valid {kind}: left out")
        return None
    if kind == "url":
        return text.rstrip("/")
    if kind == "size":
        return int(text) if text.isdigit() else text
    return text


def _mirror(section: configparser.SectionProxy, warn: Callable[[str], None]) -> Table:
    table: Table = {}
    for key, text in section.items():
        where = f"[mirror] {key}"
        if key in _MIRROR:
            ours, kind = _MIRROR[key]
            value = _scalar(kind, text, where, warn)
            if value is not None:
                table[ours] = value
        elif key in _MIRROR_DROPPED:
            harmless, why = _MIRROR_DROPPED[key]
            if harmless is None or text.strip().lower() != harmless:
                warn(f"{where} = {text.strip()!r} not carried over: {why}")
        else:
            warn(f"{where} is unknown: left out")
    if "download_url" in table and "download-mirror-no-fallback" not in section:
        why = _MIRROR_DROPPED["download-mirror-no-fallback"][1]
        warn(f"[mirror] download-mirror falls back to the upstream in bandersnatch: {why}")
    return table


def _enabled(parser: configparser.ConfigParser, warn: Callable[[str], None]) -> list[str]:
    names: list[str] = []
    if parser.has_option("plugins", "enabled"):
        names += _lines(parser.get("plugins", "enabled"), comments=True)
    for old in ("blacklist", "whitelist", "blocklist", "allowlist"):
        if parser.has_option(old, "plugins"):
            warn(f"[{old}] plugins (bandersnatch < 4) moved to [plugins] enabled")
            names += _lines(parser.get(old, "plugins"), comments=True)
    if "all" in names:
        warn("[plugins] enabled = all is not supported: list the plugins to enable by name")
        names = [n for n in names if n != "all"]
    installed = discover()
    result: list[str] = []
    for name in names:
        if name in _RENAMED_PLUGINS:
            warn(f"plugin {name!r} is now called {_RENAMED_PLUGINS[name]!r}")
            name = _RENAMED_PLUGINS[name]
        if name not in installed:
            warn(
                f"plugin {name!r} is not installed: install a bandersnatch-clone plugin of "
                "that name or remove it, else the config does not load"
            )
        if name not in result:
            result.append(name)
    return result


def _plugin_table(
    name: str, section: configparser.SectionProxy, warn: Callable[[str], None]
) -> Table:
    spec = _TABLES.get(name)
    if spec is None:
        warn(f"[{name}] is not a table any built-in plugin reads: copied as is")
    table: Table = {}
    for key, text in section.items():
        if key == "plugins" and name in ("blocklist", "allowlist"):
            continue  # moved to [plugins] enabled
        kind = "list" if "\n" in text.strip() else "str"
        if spec is not None:
            if key not in spec and "*" not in spec:
                warn(f"[{name}] {key} is unknown: left out")
                continue
            kind = spec.get(key, spec.get("*", kind))
        if kind in ("list", "names"):
            table[key] = _lines(text, comments=kind == "names")
        else:
            value = _scalar(kind, text, f"[{name}] {key}", warn)
            if value is not None:
                table[key] = value
    return table


def convert_bandersnatch_config(ini_text: str, source: str) -> tuple[str, list[str]]:
    """Our TOML for a bandersnatch.conf, and one warning per setting it cannot carry over.

    Raises `ConfigError` when ``ini_text`` is not an INI file with a ``[mirror]`` section.
    """
    # bandersnatch's own parser settings: only "=" separates (metadata keys hold ":"), and
    # values are taken literally (regular expressions hold "%").
    parser = configparser.ConfigParser(delimiters=("=",), interpolation=None)
    try:
        parser.read_string(ini_text, source=source)
    except configparser.Error as exc:
        raise ConfigError(source, None, f"not a readable bandersnatch config: {exc}") from exc
    if not parser.has_section("mirror"):
        raise ConfigError(source, "mirror", "missing: not a bandersnatch config")
    warnings: list[str] = []
    data: dict[str, Table] = {"mirror": _mirror(parser["mirror"], warnings.append)}
    enabled = _enabled(parser, warnings.append)
    data["plugins"] = {"enabled": enabled}
    for name in parser.sections():
        if name in ("mirror", "plugins"):
            continue
        if name in _STORAGE_TABLES:
            warnings.append(f"[{name}] (a storage backend) not carried over")
            continue
        ours = _RENAMED_TABLES.get(name, name)
        if ours != name:
            warnings.append(f"[{name}] is now called [{ours}]")
        table = _plugin_table(ours, parser[name], warnings.append)
        if table:
            data.setdefault(ours, {}).update(table)
        if ours in _TABLES and not set(_READERS.get(ours, (ours,))) & set(enabled):
            warnings.append(f"[{ours}] is read by no enabled plugin: it has no effect")
    if "directory" not in data["mirror"]:
        warnings.append("[mirror] directory is missing: set it before use")
    else:
        try:
            config_from_mapping(data, source)
        except ConfigError as exc:
            warnings.append(f"the result does not load yet: {exc.key}: {exc.problem}")
    header = [f"# Converted from {source} by 'bandersnatch-clone config convert'."]
    header += [f"# NOTE: {w}" for w in warnings]
    return "\n".join(header) + "\n\n" + tomli_w.dumps(data), warnings
