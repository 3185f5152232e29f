"""An example bandersnatch-clone filter plugin: skip distribution files larger than a size.

Enable it in the mirror's config::

    [plugins]
    enabled = ["max_file_size"]

    [max_file_size]
    max_size = "200M"     # bytes, or a size with a unit: "500K", "200M", "2G" (powers of 1024)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Self

import humanfriendly
from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.base import Release, ReleaseFileFilter
from bandersnatch_clone.model import DistFile

__all__ = ["MaxFileSize"]


class MaxFileSize(ReleaseFileFilter):
    """Drop files whose size (PEP 700 ``size``) is over ``[max_file_size] max_size``.

    A file whose size the upstream does not give is kept: there is nothing to judge it by.
    The other files of the release are kept, so a project with one huge GPU wheel still
    offers its sdist and its other wheels.
    """

    name = "max_file_size"
    section = "max_file_size"

    def __init__(self, limit: int) -> None:
        self.limit = limit

    @classmethod
    def from_config(cls, section: Mapping[str, object]) -> Self:
        # Every key is checked: a typo must stop the mirror, not silently mirror everything.
        for key in section:
            if key != "max_size":
                raise PluginError(cls.name, f"{cls.section}.{key}", "unknown key; use max_size")
        value = section.get("max_size")
        if value is None:
            raise PluginError(cls.name, f"{cls.section}.max_size", "missing: e.g. '200M'")
        return cls(_bytes(value))

    def allow(self, file: DistFile, release: Release) -> bool:
        return file.size is None or file.size <= self.limit

    def describe(self) -> str:
        return f"{self.name}: skip files over {humanfriendly.format_size(self.limit, binary=True)}"


def _bytes(value: object) -> int:
    key = f"{MaxFileSize.section}.max_size"
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise PluginError(MaxFileSize.name, key, f"expected a size such as '200M', got {value!r}")
    try:
        size = value if isinstance(value, int) else humanfriendly.parse_size(value, binary=True)
    except humanfriendly.InvalidSize as exc:
        raise PluginError(MaxFileSize.name, key, f"not a size: {value!r}") from exc
    if size <= 0:
        raise PluginError(MaxFileSize.name, key, f"must be more than 0 bytes, got {value!r}")
    return int(size)
