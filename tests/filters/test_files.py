"""Release-file filters: each decides on one distribution file."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime

import pytest

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.base import PluginContext
from bandersnatch_clone.filters.files import (
    Cooldown,
    ExcludeFilename,
    ExcludePlatform,
    ExcludeYanked,
    RequiresPythonReleaseFile,
)
from tests.filters.helpers import dist, frozen, release

_ANY = release("1.0")


@pytest.mark.parametrize(
    ("platforms", "filename", "kept"),
    [
        # Windows: wheel platform tags, old installers by name and by kind.
        (["windows"], "foo-1.0-cp311-cp311-win_amd64.whl", False),
        (["windows"], "foo-1.0-cp311-cp311-win32.whl", False),
        (["windows"], "foo-1.0-cp311-cp311-win_arm64.whl", False),
        (["win"], "foo-1.0.win32-py2.7.exe", False),
        (["windows"], "foo-1.0.win-amd64.msi", False),
        (["windows"], "foo-1.0-py3-none-any.whl", True),
        (["windows"], "foo-1.0.tar.gz", True),  # sdists are never dropped
        (["windows"], "foo-1.0.zip", True),
        # macOS, FreeBSD.
        (["macos"], "foo-1.0-cp312-cp312-macosx_11_0_arm64.whl", False),
        (["macosx"], "foo-1.0-cp39-cp39-macosx_10_9_universal2.whl", False),
        (["macos"], "foo-1.0-py2.7-macosx-10.9-x86_64.egg", False),
        (["macos"], "foo-1.0.dmg", False),
        (["freebsd"], "foo-1.0-py2.7-freebsd-12.egg", False),
        (["freebsd"], "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.whl", True),
        # Linux: linux_*, manylinux*, musllinux*, RPMs.
        (["linux"], "foo-1.0-cp311-cp311-manylinux_2_17_x86_64.manylinux2014_x86_64.whl", False),
        (["linux"], "foo-1.0-cp311-cp311-musllinux_1_2_aarch64.whl", False),
        (["linux"], "foo-1.0-cp27-cp27mu-manylinux1_i686.whl", False),
        (["linux"], "foo-1.0-cp311-cp311-linux_armv7l.whl", False),
        (["linux"], "foo-1.0-1.x86_64.rpm", False),
        (["linux"], "foo-1.0.linux-x86_64.tar.gz", True),  # looks like an sdist: kept
        (["linux"], "foo-1.0-cp311-cp311-win_amd64.whl", True),
        # A wheel goes only when all of its tags are excluded.
        (["macos"], "foo-1.0-cp311-cp311-macosx_10_9_x86_64.linux_x86_64.whl", True),
        (["macos", "linux"], "foo-1.0-cp311-cp311-macosx_10_9_x86_64.linux_x86_64.whl", False),
        # A single platform tag.
        (["win_amd64"], "foo-1.0-cp311-cp311-win_amd64.whl", False),
        (["win_amd64"], "foo-1.0-cp311-cp311-win32.whl", True),
        (["manylinux2014_aarch64"], "foo-1.0-cp39-cp39-manylinux2014_aarch64.whl", False),
        (["MANYLINUX2014_AARCH64"], "foo-1.0-cp39-cp39-manylinux2014_x86_64.whl", True),
        # Pythons: a minor version, or a whole major version.
        (["py2.7"], "foo-1.0-cp27-cp27m-win32.whl", False),
        (["py2.7"], "foo-1.0-py27-none-any.whl", False),
        (["py2.7"], "foo-1.0-py2.py3-none-any.whl", True),
        (["py2.7"], "foo-1.0-py2.7.egg", False),
        (["py2.7"], "foo-1.0.win32-py2.7.exe", False),
        (["py3.1"], "foo-1.0-cp310-cp310-win32.whl", True),  # 3.1 is not 3.10
        (["py3.10"], "foo-1.0-cp310-cp310-win32.whl", False),
        (["py3.10"], "foo-1.0-pp310-pypy310_pp73-manylinux_2_28_x86_64.whl", False),
        (["py2"], "foo-1.0-py2-none-any.whl", False),
        (["py2"], "foo-1.0-cp26-cp26mu-manylinux1_x86_64.whl", False),
        (["py2"], "foo-1.0-py2.py3-none-any.whl", True),
        (["py2", "py3"], "foo-1.0-py2.py3-none-any.whl", False),
        (["py3.12"], "foo-1.0-cp312-abi3-manylinux_2_17_x86_64.whl", False),
        (["py3.12"], "foo-1.0-cp39-abi3-manylinux_2_17_x86_64.whl", True),
        ([], "foo-1.0-cp311-cp311-win_amd64.whl", True),
    ],
)
def test_exclude_platform(platforms: list[str], filename: str, kept: bool) -> None:
    plugin = ExcludePlatform.from_config(frozen({"platforms": platforms}))
    assert plugin.allow(dist(filename), _ANY) is kept


@pytest.mark.parametrize("keyword", ["windwos", "solaris", "python2", "py"])
def test_exclude_platform_rejects_unknown_keywords(keyword: str) -> None:
    with pytest.raises(PluginError, match="unknown platform") as caught:
        ExcludePlatform.from_config(frozen({"platforms": [keyword]}))
    assert caught.value.key == "blocklist.platforms"


@pytest.mark.parametrize(
    ("patterns", "filename", "kept"),
    [
        (["*.exe", "*.egg"], "foo-1.0.win32.exe", False),
        (["*.exe", "*.egg"], "foo-1.0-py2.7.egg", False),
        (["*.exe"], "foo-1.0.tar.gz", True),
        (["*-win32.whl"], "foo-1.0-cp311-cp311-win32.whl", False),
        (["*.EXE"], "foo-1.0.win32.exe", True),  # case-sensitive, as filenames are
    ],
)
def test_exclude_filename(patterns: list[str], filename: str, kept: bool) -> None:
    plugin = ExcludeFilename.from_config(frozen({"patterns": patterns}))
    assert plugin.allow(dist(filename), _ANY) is kept


@pytest.mark.parametrize(
    ("targets", "requires_python", "kept"),
    [
        (["3.11", "3.12"], ">=3.8", True),
        (["3.11", "3.12"], ">=3.12", True),
        (["3.11", "3.12"], ">=3.13", False),
        (["3.11", "3.12"], "<3", False),
        (["3.11"], ">=2.7,!=3.0.*,!=3.1.*", True),
        (["3.11"], "~=3.11.0", True),
        (["3.14"], ">=3.14.0b1", True),  # the target as a release matches pre-release floors
        (["3.11"], None, True),  # none given: kept
        (["3.11"], ">=3.6.*", True),  # not a valid specifier: pip ignores it, so do we
    ],
)
def test_requires_python(targets: list[str], requires_python: str | None, kept: bool) -> None:
    plugin = RequiresPythonReleaseFile.from_config(frozen({"targets": targets}))
    assert plugin.allow(dist("foo-1.0.tar.gz", requires_python=requires_python), _ANY) is kept


@pytest.mark.parametrize("table", [{}, {"targets": []}, {"targets": ["three"]}])
def test_requires_python_needs_targets(table: Mapping[str, object]) -> None:
    with pytest.raises(PluginError) as caught:
        RequiresPythonReleaseFile.from_config(frozen(table))
    assert caught.value.key == "requires_python.targets"


@pytest.mark.parametrize(("yanked", "kept"), [(None, True), ("", False), ("broken", False)])
def test_exclude_yanked(yanked: str | None, kept: bool) -> None:
    plugin = ExcludeYanked.from_config(frozen({}))
    assert plugin.allow(dist("foo-1.0.tar.gz", yanked=yanked), _ANY) is kept


def test_exclude_yanked_takes_no_options() -> None:
    with pytest.raises(PluginError, match="unknown key"):
        ExcludeYanked.from_config(frozen({"reason": "x"}))


class Clock:
    """A clock the test moves by hand."""

    def __init__(self, now: datetime) -> None:
        self.now = now

    def __call__(self) -> datetime:
        return self.now


@pytest.mark.parametrize(
    ("uploaded", "kept"),
    [
        ("2024-06-10T00:00:00Z", False),  # 5 days old: held back
        ("2024-06-08T00:00:00.000001Z", False),
        ("2024-06-08T00:00:00Z", True),  # exactly 7 days old
        ("2023-01-01T00:00:00Z", True),
        (None, True),  # no upload time: not held back
    ],
)
def test_cooldown(uploaded: str | None, kept: bool) -> None:
    context = PluginContext(
        tables={"cooldown": frozen({"days": 7})}, now=Clock(datetime(2024, 6, 15, tzinfo=UTC))
    )
    plugin = Cooldown.from_context(context)
    assert plugin.allow(dist("foo-1.0.tar.gz", uploaded=uploaded), _ANY) is kept


def test_cooldown_lets_a_file_in_once_it_is_old_enough() -> None:
    clock = Clock(datetime(2024, 6, 15, tzinfo=UTC))
    plugin = Cooldown.from_context(PluginContext(tables={"cooldown": {"days": 3}}, now=clock))
    file = dist("foo-1.0.tar.gz", uploaded="2024-06-14T12:00:00Z")
    decisions = [plugin.allow(file, _ANY)]
    clock.now = datetime(2024, 6, 17, 12, tzinfo=UTC)
    decisions.append(plugin.allow(file, _ANY))
    assert decisions == [False, True]


@pytest.mark.parametrize("table", [{}, {"days": 0}, {"days": "a week"}])
def test_cooldown_needs_days(table: Mapping[str, object]) -> None:
    with pytest.raises(PluginError) as caught:
        Cooldown.from_config(frozen(table))
    assert caught.value.key == "cooldown.days"
