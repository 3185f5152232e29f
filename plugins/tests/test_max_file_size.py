"""The example plugin on its own: options, and the decision on each file."""

from __future__ import annotations

from collections.abc import Mapping

import pytest
from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.base import Release
from bandersnatch_clone.model import DistFile
from packaging.utils import NormalizedName

from bandersnatch_clone_filter_example import MaxFileSize

RELEASE = Release(NormalizedName("demo"), "1.0")


def _file(size: int | None) -> DistFile:
    return DistFile(filename="demo-1.0.tar.gz", url="https://example/demo-1.0.tar.gz", size=size)


@pytest.mark.parametrize(
    ("max_size", "size", "kept"),
    [
        ("200M", 200 * 2**20, True),
        ("200M", 200 * 2**20 + 1, False),
        ("1G", 2**30, True),
        (1000, 999, True),
        (1000, 1001, False),
        ("1K", None, True),  # no size given: nothing to judge by
    ],
)
def test_decision(max_size: object, size: int | None, kept: bool) -> None:
    plugin = MaxFileSize.from_config({"max_size": max_size})
    assert plugin.allow(_file(size), RELEASE) is kept


@pytest.mark.parametrize(
    ("section", "key"),
    [
        ({}, "max_file_size.max_size"),
        ({"max_size": "huge"}, "max_file_size.max_size"),
        ({"max_size": 0}, "max_file_size.max_size"),
        ({"max_size": True}, "max_file_size.max_size"),
        ({"max_size": "1M", "maxsize": "2M"}, "max_file_size.maxsize"),
    ],
)
def test_bad_options_name_the_key(section: Mapping[str, object], key: str) -> None:
    with pytest.raises(PluginError) as caught:
        MaxFileSize.from_config(section)
    assert (caught.value.plugin, caught.value.key) == ("max_file_size", key)


def test_describe() -> None:
    assert MaxFileSize.from_config({"max_size": "200M"}).describe() == (
        "max_file_size: skip files over 200 MiB"
    )
