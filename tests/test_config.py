"""Tests for the configuration file: good files, every kind of bad file, the starter config."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from types import MappingProxyType

import pytest

from bandersnatch_clone.config import (
    Config,
    MirrorConfig,
    config_from_mapping,
    load_config,
    render_starter_config,
)
from bandersnatch_clone.errors import ConfigError

MIRROR = '[mirror]\ndirectory = "/srv/pypi"\n'


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bandersnatch-clone.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_minimal_config_takes_every_default(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MIRROR))
    assert config == Config(
        path=tmp_path / "bandersnatch-clone.toml",
        mirror=MirrorConfig(directory=Path("/srv/pypi")),
        plugins_enabled=(),
        plugin_sections={},
    )


def test_defaults_are_the_documented_ones() -> None:
    mirror = MirrorConfig(directory=Path("/srv/pypi"))
    assert dataclasses.asdict(mirror) == {
        "directory": Path("/srv/pypi"),
        "upstream": "https://pypi.org",
        "download_url": "",
        "listing": "simple",
        "metadata_workers": 16,
        "download_workers": 48,
        "large_file_workers": 16,
        "timeout": 30.0,
        "connect_timeout": 10.0,
        "retries": 5,
        "json": False,
        "release_files": True,
        "root_uri": "",
        "stop_on_error": False,
        "delete_removed_projects": True,
        "removal_guard": 0.05,
        "cleanup": True,
        "user_agent_extra": "",
        "diff_file": None,
        "diff_append_epoch": False,
    }


@pytest.mark.parametrize(
    ("value", "expected"),
    [('""', None), ('"mirrored-files"', "cfg/mirrored-files"), ('"/var/d"', "/var/d")],
)
def test_diff_file_is_optional_and_resolves_like_directory(
    tmp_path: Path, value: str, expected: str | None
) -> None:
    (tmp_path / "cfg").mkdir()
    path = tmp_path / "cfg" / "m.toml"
    path.write_text(f"{MIRROR}diff_file = {value}\n")
    got = load_config(path).mirror.diff_file
    assert got == (None if expected is None else tmp_path / expected)


def test_full_config_parses_every_field(tmp_path: Path) -> None:
    text = """
[mirror]
directory = "/srv/pypi"
upstream = "http://localhost:8080/"
download_url = "https://files.example.com/pypi/"
listing = "xmlrpc"
metadata_workers = 64
download_workers = 1
timeout = 5
connect_timeout = 2.5
retries = 0
json = true
release_files = false
root_uri = "https://files.pythonhosted.org/"
stop_on_error = true
delete_removed_projects = false
cleanup = false
user_agent_extra = "ops@example.com"
"""
    assert load_config(write(tmp_path, text)).mirror == MirrorConfig(
        directory=Path("/srv/pypi"),
        upstream="http://localhost:8080",
        download_url="https://files.example.com/pypi",
        listing="xmlrpc",
        metadata_workers=64,
        download_workers=1,
        timeout=5.0,
        connect_timeout=2.5,
        retries=0,
        json=True,
        release_files=False,
        root_uri="https://files.pythonhosted.org",
        stop_on_error=True,
        delete_removed_projects=False,
        cleanup=False,
        user_agent_extra="ops@example.com",
    )


def test_float_fields_accept_integers_as_floats(tmp_path: Path) -> None:
    timeout = load_config(write(tmp_path, MIRROR + "timeout = 5\n")).mirror.timeout
    assert (type(timeout), timeout) == (float, 5.0)


@pytest.mark.parametrize(
    ("directory", "expected"),
    [
        ("mirror", "{config_dir}/mirror"),
        ("./a/../b", "{config_dir}/b"),
        ("/abs/path", "/abs/path"),
        ("~/pypi", "{home}/pypi"),
    ],
)
def test_directory_resolves_against_the_config_files_folder(
    tmp_path: Path, directory: str, expected: str
) -> None:
    path = write(tmp_path, f'[mirror]\ndirectory = "{directory}"\n')
    want = expected.format(config_dir=tmp_path, home=os.path.expanduser("~"))
    assert load_config(path).mirror.directory == Path(want)


def test_relative_config_path_resolves_from_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "etc").mkdir()
    write(tmp_path / "etc", '[mirror]\ndirectory = "data"\n')
    monkeypatch.chdir(tmp_path)
    config = load_config("etc/bandersnatch-clone.toml")
    assert config.mirror.directory == tmp_path / "etc" / "data"


PLUGINS = (
    MIRROR
    + '[plugins]\nenabled = ["allowlist_project", "size_project"]\n'
    + '[allowlist]\npackages = ["requests", "idna"]\n[allowlist.extra]\nx = 1\n'
)


def test_plugins_and_their_sections_are_kept(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, PLUGINS))
    assert (config.plugins_enabled, config.plugin_sections) == (
        ("allowlist_project", "size_project"),
        {"allowlist": {"packages": ("requests", "idna"), "extra": {"x": 1}}},
    )


def test_plugin_sections_are_read_only_all_the_way_down(tmp_path: Path) -> None:
    sections = load_config(write(tmp_path, PLUGINS)).plugin_sections
    extra = sections["allowlist"]["extra"]
    assert [type(sections), type(sections["allowlist"]), type(extra)] == [MappingProxyType] * 3


def test_config_from_mapping_builds_without_a_file() -> None:
    config = config_from_mapping({"mirror": {"directory": "/srv/m"}}, "<command line>")
    assert config.mirror.directory == Path("/srv/m")


def test_override_validates_and_replaces(tmp_path: Path) -> None:
    config = load_config(write(tmp_path, MIRROR))
    changed = config.override({"download_workers": 4, "upstream": "http://localhost:1/"})
    assert (changed.mirror.download_workers, changed.mirror.upstream, config.mirror.retries) == (
        4,
        "http://localhost:1",
        5,
    )


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"download_workers": 0}, "mirror.download_workers"),
        ({"download_worker": 4}, "mirror.download_worker"),
        ({"json": "yes"}, "mirror.json"),
    ],
)
def test_override_rejects_bad_values(tmp_path: Path, changes: dict[str, object], key: str) -> None:
    config = load_config(write(tmp_path, MIRROR))
    with pytest.raises(ConfigError) as info:
        config.override(changes)
    assert (info.value.file, info.value.key) == ("command line", key)


BAD_CONFIGS = [
    # Unknown keys, with a suggestion.
    (MIRROR + "download_worker = 3\n", "mirror.download_worker", "did you mean 'download_workers'"),
    (MIRROR + "stop-on-error = true\n", "mirror.stop-on-error", "here it is 'stop_on_error'"),
    (MIRROR + "delete-removed-projects = 1\n", "mirror.delete-removed-projects", "did you mean"),
    (MIRROR + 'master = "https://pypi.org"\n', "mirror.master", "here it is 'upstream'"),
    (MIRROR + "workers = 3\n", "mirror.workers", "here it is 'download_workers'"),
    (MIRROR + "[plugins]\nenable = []\n", "plugins.enable", "did you mean 'enabled'"),
    ('directory = "/srv"\n', "directory", "did you mean 'mirror.directory'"),
    ('[mirorr]\ndirectory = "/srv"\n', "mirorr", "did you mean [mirror]"),
    (MIRROR + '[plugin]\nenabled = ["x"]\n', "plugin", "did you mean [plugins]"),
    # Wrong types, one per kind of field.
    (MIRROR + 'download_workers = "16"\n', "mirror.download_workers", "expected an integer"),
    (MIRROR + "download_workers = 2.5\n", "mirror.download_workers", "got a float (2.5)"),
    (MIRROR + "retries = true\n", "mirror.retries", "expected an integer, got a boolean"),
    (MIRROR + 'timeout = "30"\n', "mirror.timeout", "expected a number, got a string ('30')"),
    (MIRROR + "timeout = false\n", "mirror.timeout", "expected a number, got a boolean"),
    (MIRROR + 'json = "yes"\n', "mirror.json", "expected a boolean (true/false), got a string"),
    (MIRROR + "cleanup = 1\n", "mirror.cleanup", "expected a boolean (true/false), got an integer"),
    (MIRROR + "user_agent_extra = 5\n", "mirror.user_agent_extra", "expected a string"),
    (MIRROR + "upstream = [1]\n", "mirror.upstream", "expected a string, got an array"),
    ("[mirror]\ndirectory = 1\n", "mirror.directory", "expected a string, got an integer"),
    ("mirror = 3\n", "mirror", "expected a table, got an integer"),
    (MIRROR + 'plugins = "x"\n', "mirror.plugins", "unknown key"),
    (MIRROR + "[plugins]\nenabled = 'allowlist'\n", "plugins.enabled", "expected an array"),
    (MIRROR + "[plugins]\nenabled = [1]\n", "plugins.enabled", "expected an array of plugin"),
    (MIRROR + '[plugins]\nenabled = ["a", "a"]\n', "plugins.enabled", "listed twice"),
    (MIRROR + "allowlist = 3\n", "mirror.allowlist", "unknown key"),
    ('allowlist = 3\n[mirror]\ndirectory = "/x"\n', "allowlist", "expected a table"),
    # Bad URLs.
    (MIRROR + 'upstream = "ftp://pypi.org"\n', "mirror.upstream", "http:// or https://"),
    (MIRROR + 'upstream = "pypi.org"\n', "mirror.upstream", "http:// or https://"),
    (MIRROR + 'upstream = "https://"\n', "mirror.upstream", "with a host"),
    (MIRROR + 'upstream = ""\n', "mirror.upstream", "http:// or https://"),
    (MIRROR + 'upstream = "https://pypi.org:port/"\n', "mirror.upstream", "invalid URL"),
    (MIRROR + 'upstream = "https://pypi.org/?a=1"\n', "mirror.upstream", "a query"),
    (MIRROR + 'root_uri = "files.example.com"\n', "mirror.root_uri", "http:// or https://"),
    (MIRROR + 'download_url = "https://a b/"\n', "mirror.download_url", "spaces"),
    # Bad choices and ranges.
    (MIRROR + 'listing = "json"\n', "mirror.listing", "expected one of 'simple', 'xmlrpc'"),
    (
        MIRROR + "metadata_workers = 0\n",
        "mirror.metadata_workers",
        "out of range: 0 is not in 1..64",
    ),
    (MIRROR + "metadata_workers = 65\n", "mirror.metadata_workers", "not in 1..64"),
    (MIRROR + "download_workers = 129\n", "mirror.download_workers", "not in 1..128"),
    (MIRROR + "download_workers = -1\n", "mirror.download_workers", "out of range"),
    (MIRROR + "large_file_workers = 0\n", "mirror.large_file_workers", "not in 1..128"),
    (MIRROR + "retries = 21\n", "mirror.retries", "not in 0..20"),
    (MIRROR + "timeout = 0\n", "mirror.timeout", "out of range"),
    (MIRROR + "connect_timeout = -1.5\n", "mirror.connect_timeout", "out of range"),
    # Missing required.
    ("[mirror]\n", "mirror.directory", "missing required key"),
    ("", "mirror.directory", "missing required key"),
    ('[mirror]\ndirectory = " "\n', "mirror.directory", "empty"),
]


@pytest.mark.parametrize(("text", "key", "problem"), BAD_CONFIGS)
def test_bad_config_names_file_key_and_problem(
    tmp_path: Path, text: str, key: str, problem: str
) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    error = info.value
    assert (error.file, error.key, problem in error.problem, str(path) in str(error)) == (
        str(path),
        key,
        True,
        True,
    )


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (None, "file not found"),
        (b"[mirror]\ndirectory = \n", "TOML syntax error: Invalid value (at line 2, column 13)"),
        (b"[mirror\n", "at line 1"),
        (b'[mirror]\ndirectory = "\xff"\n', "not UTF-8"),
        ("dir", "cannot read the file"),
    ],
)
def test_unreadable_file_names_the_file(
    tmp_path: Path, content: bytes | str | None, problem: str
) -> None:
    path = tmp_path / "bandersnatch-clone.toml"
    if content == "dir":
        path.mkdir()
    elif isinstance(content, bytes):
        path.write_bytes(content)
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert (info.value.file, info.value.key, problem in info.value.problem) == (
        str(path),
        None,
        True,
    )


def test_starter_config_round_trips_to_the_defaults(tmp_path: Path) -> None:
    path = write(tmp_path, render_starter_config("/srv/pypi"))
    assert load_config(path) == Config(path, MirrorConfig(directory=Path("/srv/pypi")))


def test_starter_config_quotes_awkward_directories(tmp_path: Path) -> None:
    path = write(tmp_path, render_starter_config('my "pypi"\\mirror'))
    assert load_config(path).mirror.directory == tmp_path / 'my "pypi"\\mirror'


def test_starter_config_explains_every_key() -> None:
    text = render_starter_config("/srv/pypi")
    undocumented = [
        f.name for f in dataclasses.fields(MirrorConfig) if f"#   {f.name} " not in text
    ]
    assert undocumented == []


def test_starter_config_example_plugin_section_loads_when_uncommented(tmp_path: Path) -> None:
    text = render_starter_config("/srv/pypi")
    example = text[text.index("# [plugins]\n") : text.index("\n#\n[plugins]")]
    uncommented = "\n".join(line.removeprefix("# ") for line in example.splitlines())
    config = load_config(write(tmp_path, MIRROR + uncommented + "\n"))
    assert (config.plugins_enabled, config.plugin_sections["allowlist"]["packages"]) == (
        ("allowlist_project",),
        ("requests", "idna"),
    )
