"""Metadata filters: regular expressions and version ranges on JSON API fields; project size."""

from __future__ import annotations

from collections.abc import Mapping

import pytest

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.base import PluginContext
from bandersnatch_clone.filters.metadata import (
    RegexProjectMetadata,
    RegexReleaseFileMetadata,
    SizeProjectMetadata,
    VersionRangeProjectMetadata,
    VersionRangeReleaseFileMetadata,
)
from tests.filters.helpers import dist, frozen, project, release

_PY2 = ".*Programming Language :: Python :: 2.*"
_PY3 = ".*Programming Language :: Python :: 3.*"
_BOTH = {
    "classifiers": ["Programming Language :: Python :: 2.7", "Programming Language :: Python :: 3"]
}
_ONLY3 = {"classifiers": ["Programming Language :: Python :: 3"]}
_NONE: Mapping[str, object] = {"classifiers": []}


@pytest.mark.parametrize(
    ("table", "info", "kept"),
    [
        ({"info.classifiers": [_PY3]}, _BOTH, True),
        ({"info.classifiers": [_PY3]}, {"classifiers": ["Topic :: Games"]}, False),
        ({"info.classifiers": [_PY3]}, _NONE, True),  # default match-null: a missing value passes
        ({"not-null:info.classifiers": [_PY3]}, _NONE, False),
        ({"not-null:info.classifiers": [_PY3]}, {}, False),
        ({"none:info.classifiers": [_PY2]}, _BOTH, False),
        ({"none:info.classifiers": [_PY2]}, _ONLY3, True),
        ({"none:info.classifiers": [_PY2]}, _NONE, True),
        ({"all:info.classifiers": [".*Python"]}, _BOTH, True),
        ({"all:info.classifiers": [_PY3]}, _BOTH, False),
        ({"any:not-null:info.license": ["MIT", "BSD"]}, {"license": "MIT"}, True),
        ({"any:not-null:info.license": ["MIT", "BSD"]}, {"license": "GPL"}, False),
        ({"any:not-null:info.license": ["MIT", "BSD"]}, {"license": None}, False),
        (
            {"info.name": ["req"], "info.license": ["MIT"]},
            {"name": "requests", "license": "GPL"},
            False,
        ),
        ({"last_serial": ["12"]}, {}, False),  # every key must pass; serial 1 does not match
    ],
)
def test_regex_project_metadata(
    table: Mapping[str, object], info: Mapping[str, object], kept: bool
) -> None:
    plugin = RegexProjectMetadata.from_config(frozen(table))
    assert plugin.allow(project("demo", ["demo-1.0.tar.gz"]), info) is kept


@pytest.mark.parametrize(
    ("table", "needs"), [({"info.classifiers": ["x"]}, True), ({"last_serial": ["1"]}, False)]
)
def test_regex_project_metadata_needs_info_only_for_info_paths(
    table: Mapping[str, object], needs: bool
) -> None:
    assert RegexProjectMetadata.from_config(frozen(table)).needs_metadata is needs


@pytest.mark.parametrize(
    ("table", "problem"),
    [
        ({"sometimes:info.classifiers": ["x"]}, "unknown tag 'sometimes'"),
        ({"releases.1.0": ["x"]}, "must start with one of info, last_serial"),
        ({"info.classifiers": ["("]}, "invalid regular expression"),
        ({"info.classifiers": "x"}, "expected an array of strings"),
    ],
)
def test_regex_project_metadata_bad_keys(table: Mapping[str, object], problem: str) -> None:
    with pytest.raises(PluginError, match=problem) as caught:
        RegexProjectMetadata.from_config(frozen(table))
    assert caught.value.key == f"regex_project_metadata.{next(iter(table))}"


@pytest.mark.parametrize(
    ("table", "requires_python", "kept"),
    [
        ({"info.requires_python": ["3.12"]}, ">=3.8", True),
        ({"info.requires_python": ["3.12"]}, "<3", False),
        ({"info.requires_python": ["2.7", "3.12"]}, "<3", True),
        ({"info.requires_python": ["3.12"]}, None, True),
        ({"info.requires_python": ["3.12"]}, "", True),
        ({"not-null:info.requires_python": ["3.12"]}, None, False),
        ({"info.requires_python": ["3.12"]}, ">=3.6.*", True),  # unparsable: not filtered on
    ],
)
def test_version_range_project_metadata(
    table: Mapping[str, object], requires_python: str | None, kept: bool
) -> None:
    plugin = VersionRangeProjectMetadata.from_config(frozen(table))
    info = {"requires_python": requires_python}
    assert plugin.allow(project("demo", ["demo-1.0.tar.gz"]), info) is kept


def test_version_range_rejects_non_versions() -> None:
    with pytest.raises(PluginError, match="not a PEP 440 version"):
        VersionRangeProjectMetadata.from_config(frozen({"info.requires_python": ["three"]}))


@pytest.mark.parametrize(
    ("table", "filename", "kept"),
    [
        ({"any:release_file.packagetype": ["sdist", "bdist_wheel"]}, "foo-1.0.tar.gz", True),
        (
            {"any:release_file.packagetype": ["sdist", "bdist_wheel"]},
            "foo-1.0-py3-none-any.whl",
            True,
        ),
        ({"any:release_file.packagetype": ["sdist", "bdist_wheel"]}, "foo-1.0-py2.7.egg", False),
        ({"none:release_file.filename": [r".*\.exe$"]}, "foo-1.0.win32.exe", False),
        (
            {"release_file.python_version": ["source", "py3", "cp3"]},
            "foo-1.0-cp27-none-any.whl",
            False,
        ),
        ({"release_file.python_version": ["source", "py3", "cp3"]}, "foo-1.0.zip", True),
        ({"release": [r"1\."]}, "foo-1.0.tar.gz", True),
        ({"release": [r"2\."]}, "foo-1.0.tar.gz", False),
    ],
)
def test_regex_release_file_metadata(
    table: Mapping[str, object], filename: str, kept: bool
) -> None:
    plugin = RegexReleaseFileMetadata.from_config(frozen(table))
    assert plugin.allow(dist(filename), release("1.0")) is kept


@pytest.mark.parametrize(
    ("requires_python", "kept"), [(">=3.8", True), (">=3.13", False), (None, True)]
)
def test_version_range_release_file_metadata(requires_python: str | None, kept: bool) -> None:
    table = {"release_file.requires_python": ["3.11", "3.12"]}
    plugin = VersionRangeReleaseFileMetadata.from_config(frozen(table))
    file = dist("foo-1.0.tar.gz", requires_python=requires_python)
    assert plugin.allow(file, release("1.0")) is kept


def test_release_file_metadata_needs_info_only_for_info_paths() -> None:
    needs = [
        RegexReleaseFileMetadata.from_config(frozen({"release_file.filename": ["x"]})),
        RegexReleaseFileMetadata.from_config(frozen({"info.license": ["MIT"]})),
    ]
    assert [p.needs_metadata for p in needs] == [False, True]


@pytest.mark.parametrize(
    ("limit", "allowlist", "name", "sizes", "kept"),
    [
        ("1G", [], "big", (600 * 2**20, 600 * 2**20), False),
        ("1G", [], "small", (300 * 2**20, 300 * 2**20), True),
        ("1G", ["big"], "big", (600 * 2**20, 600 * 2**20), True),  # allowlisted: exempt
        ("1GB", [], "edge", (2**30,), True),  # units are powers of 1024, whatever the spelling
        (1000, [], "bytes", (600, 600), False),
        ("0", [], "off", (10**12,), True),  # 0 switches the filter off
    ],
)
def test_size_project_metadata(
    limit: object, allowlist: list[str], name: str, sizes: tuple[int, ...], kept: bool
) -> None:
    context = PluginContext(
        tables={
            "size_project_metadata": frozen({"max_package_size": limit}),
            "allowlist": frozen({"packages": allowlist}),
        }
    )
    plugin = SizeProjectMetadata.from_context(context)
    detail = project(name, [dist(f"{name}-{i}.0.tar.gz", size=s) for i, s in enumerate(sizes)])
    assert plugin.allow(detail, None) is kept


@pytest.mark.parametrize("table", [{}, {"max_package_size": "huge"}, {"max_package_size": True}])
def test_size_project_metadata_bad_sizes(table: Mapping[str, object]) -> None:
    with pytest.raises(PluginError) as caught:
        SizeProjectMetadata.from_config(frozen(table))
    assert caught.value.key == "size_project_metadata.max_package_size"
