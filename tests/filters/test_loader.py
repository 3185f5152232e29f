"""load_filters: entry-point discovery, and every way a plugin can fail to load -> PluginError."""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Mapping
from pathlib import Path

import pytest

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters import GROUPS, discover, load_filters
from tests.filters.helpers import config

BUILTINS = {
    "bandersnatch_clone.project_filters.v1": {
        "allowlist_project",
        "blocklist_project",
        "project_requirements",
        "regex_project",
    },
    "bandersnatch_clone.metadata_filters.v1": {
        "regex_project_metadata",
        "size_project_metadata",
        "version_range_project_metadata",
    },
    "bandersnatch_clone.release_filters.v1": {
        "allowlist_release",
        "blocklist_release",
        "latest_release",
        "prerelease_release",
        "project_requirements_pinned",
        "regex_release",
        "uploaded_after_release",
    },
    "bandersnatch_clone.release_file_filters.v1": {
        "cooldown",
        "exclude_filename",
        "exclude_platform",
        "exclude_yanked",
        "regex_release_file_metadata",
        "requires_python_release_file",
        "version_range_release_file_metadata",
    },
}


def test_builtins_are_registered_in_their_groups() -> None:
    found = discover()
    by_group = {
        group: {name for name, entries in found.items() if entries[0].group == group}
        for group in GROUPS
    }
    assert {g: names & BUILTINS[g] for g, names in by_group.items()} == BUILTINS


def test_every_builtin_loads_with_an_empty_config() -> None:
    optional = {"uploaded_after_release", "requires_python_release_file", "cooldown"}
    optional |= {"size_project_metadata"}
    names = sorted(set().union(*BUILTINS.values()) - optional)
    assert len(load_filters(config({}, names)).plugins) == len(names)


def _install(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, group: str, entries: str) -> None:
    """A distribution installed for this test only: a .dist-info on sys.path."""
    info = tmp_path / "site" / "fake_filters-1.0.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: fake-filters\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(f"[{group}]\n{textwrap.dedent(entries)}")
    (tmp_path / "site" / "fake_filters.py").write_text(
        textwrap.dedent(
            """\
            from bandersnatch_clone.filters.base import ProjectFilter

            class Named(ProjectFilter):
                name = "something_else"
                section = "x"

            class Crashing(ProjectFilter):
                name = "crashing"
                section = "crashing"

                @classmethod
                def from_config(cls, section):
                    raise KeyError("oops")

            NOT_A_CLASS = 42
            """
        )
    )
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    # Forget the module after the test (undoing a set of an absent key deletes it).
    monkeypatch.setitem(sys.modules, "fake_filters", sys.modules.get("builtins"))
    del sys.modules["fake_filters"]


@pytest.mark.parametrize(
    ("group", "entries", "enabled", "problem"),
    [
        (
            "bandersnatch_clone.project_filters.v1",
            "broken = fake_filters_missing.module:Thing\n",
            "broken",
            "cannot import fake_filters_missing.module:Thing",
        ),
        (
            "bandersnatch_clone.project_filters.v1",
            "number = fake_filters:NOT_A_CLASS\n",
            "number",
            "is not a ProjectFilter subclass",
        ),
        (
            "bandersnatch_clone.release_filters.v1",
            "named = fake_filters:Named\n",
            "named",
            "is not a ReleaseFilter subclass",
        ),
        (
            "bandersnatch_clone.project_filters.v1",
            "named = fake_filters:Named\n",
            "named",
            "Named.name is 'something_else'",
        ),
        (
            "bandersnatch_clone.project_filters.v1",
            "crashing = fake_filters:Crashing\n",
            "crashing",
            "failed to configure: KeyError",
        ),
        (
            "bandersnatch_clone.release_filters.v1",
            "latest_release = fake_filters:Named\n",
            "latest_release",
            "registered more than once",
        ),
    ],
)
def test_broken_plugins(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    group: str,
    entries: str,
    enabled: str,
    problem: str,
) -> None:
    _install(tmp_path, monkeypatch, group, entries)
    with pytest.raises(PluginError, match=problem) as caught:
        load_filters(config({}, [enabled]))
    assert caught.value.plugin == enabled


@pytest.mark.parametrize(
    ("name", "hint"),
    [
        ("latest_releases", "did you mean 'latest_release'?"),
        ("whitelist_project", "bandersnatch renamed it 'allowlist_project'"),
        ("no_such_plugin_at_all", "installed: allowlist_project,"),
    ],
)
def test_unknown_plugin(name: str, hint: str) -> None:
    with pytest.raises(PluginError, match="unknown plugin") as caught:
        load_filters(config({}, [name]))
    assert (caught.value.plugin, caught.value.key, hint in caught.value.problem) == (
        name,
        None,
        True,
    )


@pytest.mark.parametrize(
    ("tables", "enabled", "plugin", "key"),
    [
        (
            {"latest_release": {"keep": "many"}},
            "latest_release",
            "latest_release",
            "latest_release.keep",
        ),
        (
            {"blocklist": {"platform": ["windows"]}},
            "exclude_platform",
            "exclude_platform",
            "blocklist.platform",
        ),
        (
            {"allowlist": {"packages": [1, 2]}},
            "allowlist_project",
            "allowlist_project",
            "allowlist.packages",
        ),
        ({"cooldown": {}}, "cooldown", "cooldown", "cooldown.days"),
    ],
)
def test_bad_option_names_plugin_and_key(
    tables: Mapping[str, object], enabled: str, plugin: str, key: str
) -> None:
    with pytest.raises(PluginError) as caught:
        load_filters(config(tables, [enabled]))
    assert (caught.value.plugin, caught.value.key) == (plugin, key)


def test_a_table_no_plugin_reads_is_reported(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    load_filters(
        config({"latest_release": {"keep": 2}, "lattest": {"keep": 1}}, ["latest_release"])
    )
    assert [r.getMessage().split(": ", 1)[1] for r in caplog.records] == [
        "table [lattest] is not read by any enabled plugin"
    ]


def test_the_size_filter_reads_the_allowlist_table(caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    tables = {"size_project_metadata": {"max_package_size": "1G"}, "allowlist": {"packages": ["x"]}}
    load_filters(config(tables, ["size_project_metadata"]))
    assert caplog.records == []
