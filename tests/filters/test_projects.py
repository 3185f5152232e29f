"""Project filters: allowlist_project, blocklist_project, regex_project, project_requirements."""

from __future__ import annotations

from pathlib import Path

import pytest
from packaging.utils import NormalizedName

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.base import PluginContext
from bandersnatch_clone.filters.projects import (
    AllowlistProject,
    BlocklistProject,
    ProjectRequirements,
    RegexProject,
)
from tests.filters.helpers import frozen

N = NormalizedName


@pytest.mark.parametrize(
    ("packages", "name", "allowed"),
    [
        (["requests", "idna"], "requests", True),
        (["requests", "idna"], "flask", False),
        (["Discord.PY"], "discord-py", True),  # PEP 503: names are compared normalised
        (["black==24.1.0"], "black", True),  # the specifier is allowlist_release's business
        (["black  # formatter"], "black", True),  # an inline comment is not part of the name
        ([], "anything", True),  # an empty allowlist allows everything (bandersnatch)
    ],
)
def test_allowlist_project(packages: list[str], name: str, allowed: bool) -> None:
    plugin = AllowlistProject.from_config(frozen({"packages": packages}))
    assert plugin.allow(N(name)) is allowed


def test_allowlist_project_lists_its_names() -> None:
    plugin = AllowlistProject.from_config(frozen({"packages": ["Foo_Bar", "baz>=1"]}))
    assert plugin.allowlist() == frozenset({N("foo-bar"), N("baz")})


def test_empty_allowlist_is_not_a_closed_list() -> None:
    assert AllowlistProject.from_config(frozen({})).allowlist() is None


@pytest.mark.parametrize(
    ("packages", "name", "allowed"),
    [
        (["evil", "other"], "evil", False),
        (["evil"], "good", True),
        (["example2>=1.4.2,<1.9"], "example2", True),  # with a specifier: blocklist_release's
        (["Typo.Squat"], "typo-squat", False),
    ],
)
def test_blocklist_project(packages: list[str], name: str, allowed: bool) -> None:
    plugin = BlocklistProject.from_config(frozen({"packages": packages}))
    assert plugin.allow(N(name)) is allowed


@pytest.mark.parametrize(
    ("patterns", "name", "allowed"),
    [
        ([".+-evil$"], "very-evil", False),
        ([".+-evil$"], "evil", True),  # re.match: the pattern needs something before "-evil"
        (["nightly"], "tf-nightly", True),  # anchored at the start, like bandersnatch
        (["tf-.*"], "tf-nightly", False),
        ([], "anything", True),
    ],
)
def test_regex_project(patterns: list[str], name: str, allowed: bool) -> None:
    plugin = RegexProject.from_config(frozen({"packages": patterns}))
    assert plugin.allow(N(name)) is allowed


def test_regex_project_rejects_a_bad_pattern() -> None:
    with pytest.raises(PluginError, match="invalid regular expression") as caught:
        RegexProject.from_config(frozen({"packages": ["(unclosed"]}))
    assert caught.value.key == "filter_regex.packages"


def _requirements(tmp_path: Path, files: dict[str, str], table: dict[str, object]) -> PluginContext:
    for name, text in files.items():
        (tmp_path / name).write_text(text)
    return PluginContext(tables={"allowlist": frozen(table)}, base=tmp_path)


def test_project_requirements_reads_files_and_globs(tmp_path: Path) -> None:
    context = _requirements(
        tmp_path,
        {
            "requirements.txt": "Requests==2.31.0  # pinned\n-r other.txt\n\n# comment\nidna\n",
            "requirements-dev.txt": "pytest>=8 ; python_version >= '3.8'\n",
            "requirements-docs.txt": "sphinx \\\n    --hash=sha256:abc\n",
        },
        {"requirements": ["requirements.txt", "requirements-*.txt"]},
    )
    plugin = ProjectRequirements.from_context(context)
    assert plugin.allowlist() == frozenset(map(N, ["requests", "idna", "pytest", "sphinx"]))


def test_project_requirements_path_is_relative_to_the_config(tmp_path: Path) -> None:
    (tmp_path / "reqs").mkdir()
    context = _requirements(
        tmp_path,
        {"reqs/r.txt": "flask\n"},
        {"requirements_path": "reqs", "requirements": ["r.txt"]},
    )
    assert ProjectRequirements.from_context(context).allow(N("flask"))


@pytest.mark.parametrize(
    ("files", "table", "problem"),
    [
        ({}, {"requirements": ["missing.txt"]}, "cannot read"),
        ({}, {"requirements": ["nothing-*.txt"]}, "no file matches"),
        ({"r.txt": "not a valid === line\n"}, {"requirements": ["r.txt"]}, "r.txt, line 1"),
    ],
)
def test_project_requirements_errors_name_the_key(
    tmp_path: Path, files: dict[str, str], table: dict[str, object], problem: str
) -> None:
    with pytest.raises(PluginError, match=problem) as caught:
        ProjectRequirements.from_context(_requirements(tmp_path, files, table))
    assert (caught.value.plugin, caught.value.key) == (
        "project_requirements",
        "allowlist.requirements",
    )


@pytest.mark.parametrize(
    ("plugin", "table", "key"),
    [
        (AllowlistProject, {"pakages": ["x"]}, "allowlist.pakages"),
        (AllowlistProject, {"packages": "requests"}, "allowlist.packages"),
        (BlocklistProject, {"packages": ["not a name!"]}, "blocklist.packages"),
        (RegexProject, {"package": ["x"]}, "filter_regex.package"),
    ],
)
def test_bad_options_name_the_key(
    plugin: type[AllowlistProject | BlocklistProject | RegexProject],
    table: dict[str, object],
    key: str,
) -> None:
    with pytest.raises(PluginError) as caught:
        plugin.from_config(frozen(table))
    assert caught.value.key == key


def test_shared_tables_accept_each_others_keys() -> None:
    # [allowlist] serves four plugins: allowlist_project must not reject "requirements".
    table = frozen({"packages": ["a"], "requirements": [], "requirements_path": "/"})
    assert AllowlistProject.from_config(table).allow(N("a"))
