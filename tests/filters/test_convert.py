"""config convert: a real-world bandersnatch.conf becomes a TOML config that loads."""

from __future__ import annotations

import textwrap
import tomllib
from pathlib import Path

import pytest

from bandersnatch_clone.config import load_config
from bandersnatch_clone.convert import convert_bandersnatch_config
from bandersnatch_clone.errors import ConfigError
from bandersnatch_clone.filters import load_filters

REAL = textwrap.dedent(
    r"""
    [mirror]
    ; The directory where the mirror data will be stored.
    directory = /srv/pypi
    json = true
    master = https://pypi.org/
    timeout = 10
    global-timeout = 18000
    workers = 3
    hash-index = false
    stop-on-error = false
    storage-backend = filesystem
    verifiers = 3
    release-files = true
    root_uri = https://example.com/
    download-mirror = https://pypi-mirror.example.com/
    compare-method = stat
    diff-file = /srv/pypi/mirrored-files
    keep_index_versions = 0

    [plugins]
    enabled =
        blocklist_project
        whitelist_project
        allowlist_release
        prerelease_release
        exclude_platform
        latest_release
        regex_release_file_metadata
        size_project_metadata
        safety_db_release

    [blocklist]
    packages =
        example1
        # a comment line
        example2>=1.4.2,<1.9,!=1.5.*,!=1.6.*
        discord.PY  # inline comment
    platforms =
        windows
        py2.7

    [whitelist]
    packages =
        black==18.5
        ptr

    [latest_release]
    keep = 3
    sort_by = time

    [size_project_metadata]
    max_package_size = 1G

    [regex_release_file_metadata]
    any:release_file.packagetype =
        sdist
        bdist_wheel

    [filter_regex]
    releases =
        .+alpha\d$
        .+%s$

    [s3]
    region_name = us-east-1
    """
)


def _convert(tmp_path: Path) -> tuple[dict[str, object], list[str], Path]:
    text, warnings = convert_bandersnatch_config(REAL, "bandersnatch.conf")
    path = tmp_path / "mirror.toml"
    path.write_text(text)
    return tomllib.loads(text), warnings, path


def test_mirror_keys_are_mapped(tmp_path: Path) -> None:
    data, _, _ = _convert(tmp_path)
    assert data["mirror"] == {
        "directory": "/srv/pypi",
        "json": True,
        "upstream": "https://pypi.org",
        "timeout": 10.0,
        "download_workers": 3,
        "stop_on_error": False,
        "release_files": True,
        "root_uri": "https://example.com",
        "download_url": "https://pypi-mirror.example.com",
        "diff_file": "/srv/pypi/mirrored-files",
    }


def test_plugins_and_tables_are_carried_over(tmp_path: Path) -> None:
    data, _, _ = _convert(tmp_path)
    assert (data["plugins"], data["blocklist"], data["allowlist"], data["latest_release"]) == (
        {
            "enabled": [
                "blocklist_project",
                "allowlist_project",
                "allowlist_release",
                "prerelease_release",
                "exclude_platform",
                "latest_release",
                "regex_release_file_metadata",
                "size_project_metadata",
                "safety_db_release",
            ]
        },
        {
            "packages": ["example1", "example2>=1.4.2,<1.9,!=1.5.*,!=1.6.*", "discord.PY"],
            "platforms": ["windows", "py2.7"],
        },
        {"packages": ["black==18.5", "ptr"]},
        {"keep": 3, "sort_by": "time"},
    )


def test_regular_expressions_are_taken_literally(tmp_path: Path) -> None:
    data, _, _ = _convert(tmp_path)
    assert (data["filter_regex"], data["regex_release_file_metadata"]) == (
        {"releases": [r".+alpha\d$", ".+%s$"]},
        {"any:release_file.packagetype": ["sdist", "bdist_wheel"]},
    )


@pytest.mark.parametrize(
    "fragment",
    [
        "[mirror] global-timeout = '18000' not carried over",
        "[mirror] verifiers = '3' not carried over",
        "[mirror] compare-method = 'stat' not carried over",
        "[mirror] download-mirror falls back to the upstream",
        "plugin 'whitelist_project' is now called 'allowlist_project'",
        "plugin 'safety_db_release' is not installed",
        "[whitelist] is now called [allowlist]",
        "[s3] (a storage backend) not carried over",
        "[filter_regex] is read by no enabled plugin",
    ],
)
def test_losses_are_warned(tmp_path: Path, fragment: str) -> None:
    _, warnings, _ = _convert(tmp_path)
    assert any(fragment in w for w in warnings), warnings


def test_harmless_defaults_are_not_warned(tmp_path: Path) -> None:
    _, warnings, _ = _convert(tmp_path)
    quiet = ("hash-index", "storage-backend", "keep_index_versions", "stop-on-error", "json")
    assert [w for w in warnings if any(q in w for q in quiet)] == []


def test_the_result_loads_once_the_unknown_plugin_is_removed(tmp_path: Path) -> None:
    _, _, path = _convert(tmp_path)
    path.write_text(
        path.read_text()
        .replace(', "safety_db_release"', "")
        .replace('    "safety_db_release",\n', "")
    )
    filters = load_filters(load_config(path))
    assert [p.name for p in filters.plugins] == [
        "blocklist_project",
        "allowlist_project",
        "size_project_metadata",
        "allowlist_release",
        "prerelease_release",
        "latest_release",
        "exclude_platform",
        "regex_release_file_metadata",
    ]


def test_the_warnings_are_written_into_the_file_too() -> None:
    text, warnings = convert_bandersnatch_config(REAL, "bandersnatch.conf")
    assert all(f"# NOTE: {w}" in text for w in warnings)


@pytest.mark.parametrize(
    ("ini", "warning"),
    [
        ("[mirror]\ndirectory = /m\nhash-index = true\n", "hash-index is not supported"),
        ("[mirror]\ndirectory = /m\nworkers = many\n", "workers = 'many' is not a valid int"),
        ("[mirror]\ndirectory = /m\nworkers = 500\n", "the result does not load yet"),
        ("[mirror]\nmaster = https://pypi.org\n", "[mirror] directory is missing"),
        ("[mirror]\ndirectory = /m\n[plugins]\nenabled = all\n", "enabled = all is not supported"),
        ("[mirror]\ndirectory = /m\n[blacklist]\nplugins = blacklist_project\n", "moved to"),
        ("[mirror]\ndirectory = /m\nsurprise = 1\n", "[mirror] surprise is unknown"),
        ("[mirror]\ndirectory = /m\n[latest_release]\nkeep = 1\nfoo = 2\n", "foo is unknown"),
    ],
)
def test_small_configs(ini: str, warning: str) -> None:
    _, warnings = convert_bandersnatch_config(ini, "b.conf")
    assert any(warning in w for w in warnings), warnings


def test_old_style_plugin_lists_are_merged() -> None:
    ini = "[mirror]\ndirectory = /m\n[blacklist]\nplugins =\n  blacklist_project\npackages = x\n"
    text, _ = convert_bandersnatch_config(ini, "b.conf")
    data = tomllib.loads(text)
    assert (data["plugins"], data["blocklist"]) == (
        {"enabled": ["blocklist_project"]},
        {"packages": ["x"]},
    )


@pytest.mark.parametrize("ini", ["not an ini file", "[other]\nx = 1\n", "[mirror]\na = 1\na = 2\n"])
def test_not_a_bandersnatch_config(ini: str) -> None:
    with pytest.raises(ConfigError) as caught:
        convert_bandersnatch_config(ini, "b.conf")
    assert caught.value.file == "b.conf"
