"""Finding filter plugins through entry points and building the enabled ones."""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points

from bandersnatch_clone.errors import MirrorError, PluginError
from bandersnatch_clone.filters.base import GROUPS, Plugin, PluginContext

# bandersnatch's pre-5.0 names, so that an old config gets a pointed hint.
_RENAMED = {
    "whitelist_project": "allowlist_project",
    "whitelist_release": "allowlist_release",
    "blacklist_project": "blocklist_project",
    "blacklist_release": "blocklist_release",
}


@dataclass(frozen=True, slots=True)
class Available:
    """One installed plugin: its entry point and the group (stage) it is registered in."""

    entry_point: EntryPoint
    group: str

    @property
    def distribution(self) -> str:
        dist = self.entry_point.dist
        return f"{dist.name} {dist.version}" if dist is not None else "an unknown distribution"


def discover() -> Mapping[str, tuple[Available, ...]]:
    """Every installed plugin by name, across the four groups.

    A name registered twice (in two groups, or by two distributions) maps to both entries;
    that is an error only when the plugin is enabled (see `instantiate`), so an unrelated
    clash never stops a mirror.
    """
    found: dict[str, dict[tuple[str, str], Available]] = {}
    for group in GROUPS:
        for ep in entry_points(group=group):
            found.setdefault(ep.name, {}).setdefault((ep.value, group), Available(ep, group))
    return {name: tuple(entries.values()) for name, entries in found.items()}


def _unknown(name: str, available: Mapping[str, tuple[Available, ...]]) -> PluginError:
    if name in _RENAMED:
        hint = f" (bandersnatch renamed it {_RENAMED[name]!r})"
    else:
        close = difflib.get_close_matches(name, list(available), n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
    names = ", ".join(sorted(available)) or "none"
    return PluginError(name, None, f"unknown plugin{hint}; installed: {names}")


def instantiate(
    name: str, available: Mapping[str, tuple[Available, ...]], context: PluginContext
) -> Plugin:
    """Import the plugin ``name`` and build it from its table; `PluginError` when it is not
    installed, does not import, is not a plugin of its group's stage, or rejects its options."""
    entries = available.get(name, ())
    if not entries:
        raise _unknown(name, available)
    if len(entries) > 1:
        where = "; ".join(f"{a.entry_point.value} in {a.group} ({a.distribution})" for a in entries)
        raise PluginError(name, None, f"registered more than once: {where}")
    entry = entries[0]
    try:
        loaded = entry.entry_point.load()
    except Exception as exc:  # any import-time failure of third-party code
        raise PluginError(
            name, None, f"cannot import {entry.entry_point.value} ({entry.distribution}): {exc!r}"
        ) from exc
    base = GROUPS[entry.group]
    if not isinstance(loaded, type) or not issubclass(loaded, base):
        raise PluginError(
            name,
            None,
            f"{entry.entry_point.value} is not a {base.__name__} subclass "
            f"(registered in {entry.group})",
        )
    if getattr(loaded, "name", None) != name:
        raise PluginError(
            name, None, f"{loaded.__qualname__}.name is {getattr(loaded, 'name', None)!r}"
        )
    try:
        return loaded.from_context(context)
    except MirrorError:
        raise
    except Exception as exc:  # a plugin's own bug while reading its options
        raise PluginError(name, None, f"failed to configure: {exc!r}") from exc
