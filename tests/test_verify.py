"""verify and delete against a mirror synced by the real engine from the fake upstream."""

from __future__ import annotations

import asyncio
import json
import shutil
from collections.abc import Callable
from pathlib import Path, PurePosixPath

import pytest

from bandersnatch_clone import mirror
from bandersnatch_clone.config import Config, config_from_mapping
from bandersnatch_clone.delete import run_delete
from bandersnatch_clone.errors import LockedError
from bandersnatch_clone.scan import parse_page, walk_files
from bandersnatch_clone.state import Journal, MirrorLock, read_ledger
from bandersnatch_clone.verify import run_verify
from bandersnatch_clone.verify_records import PROGRESS_FILE, LinkSet, VerifySummary
from tests.fake_upstream import FakeUpstream
from tests.treecheck import check_tree, tree_snapshot

Found = set[tuple[str, str]]


@pytest.fixture
async def synced(tmp_path: Path, upstream: FakeUpstream) -> Config:
    """A mirror of `FakeIndex.small()` with JSON API copies, synced by `mirror.run`."""
    config = config_from_mapping(
        {"mirror": {"directory": str(tmp_path / "m"), "upstream": upstream.url, "json": True}},
        tmp_path / "mirror.toml",
    )
    outcome = await mirror.run(config)
    assert outcome.exit_code == 0
    return config


def tree(config: Config) -> Path:
    return config.mirror.directory


def rel(config: Config, path: Path) -> str:
    return path.relative_to(tree(config)).as_posix()


def find(config: Config, filename: str) -> Path:
    (path,) = (tree(config) / "web" / "packages").rglob(filename)
    return path


def found(summary: VerifySummary) -> Found:
    return {(p.kind.value, p.path) for p in summary.problems}


def flip_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def project_files(config: Config, project: str) -> set[str]:
    """Tree paths of everything a project's JSON page links to (files and .metadata)."""
    page = tree(config) / "web" / "simple" / project / "index.v1_json"
    return {link.path for link in parse_page(page.read_bytes(), None)[1]}


async def test_a_fresh_mirror_verifies_clean(synced: Config) -> None:
    code, summary = await run_verify(synced)
    assert (code, found(summary), summary.complete, check_tree(tree(synced))) == (
        0,
        set(),
        True,
        [],
    )
    assert summary.projects_checked == len(read_ledger(tree(synced)))
    assert summary.files_checked == 50
    assert not (tree(synced) / PROGRESS_FILE).exists()


def plant_missing(c: Config) -> Found:
    path = find(c, "beta-1.0.tar.gz")
    path.unlink()
    return {("missing", rel(c, path)), ("dangling", "web/simple/beta")}


def plant_flipped_byte(c: Config) -> Found:
    path = find(c, "alpha-2.0.tar.gz")
    flip_byte(path)
    return {("corrupt", rel(c, path))}


def plant_longer_file(c: Config) -> Found:
    path = find(c, "delta-0.1.tar.gz")
    path.write_bytes(path.read_bytes() + b"\0")
    return {("corrupt", rel(c, path))}


def plant_orphan(c: Config) -> Found:
    path = tree(c) / "web" / "packages" / "zz" / "yy" / "x01" / "stray-1.0.tar.gz"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not linked")
    return {("orphan", rel(c, path))}


def plant_dangling_link(c: Config) -> Found:
    """The page gains a link to a file that was never mirrored."""
    page = tree(c) / "web" / "simple" / "eta" / "index.v1_json"
    doc = json.loads(page.read_bytes())
    extra = dict(
        doc["files"][0], filename="eta-9.9.tar.gz", url="../../packages/aa/bb/cc/eta-9.9.tar.gz"
    )
    extra.pop("core-metadata", None)
    doc["files"].append(extra)
    page.write_text(json.dumps(doc))
    return {("missing", "web/packages/aa/bb/cc/eta-9.9.tar.gz"), ("dangling", "web/simple/eta")}


def plant_missing_metadata(c: Config) -> Found:
    path = find(c, "gamma-1.0-py3-none-any.whl.metadata")
    path.unlink()
    return {("missing", rel(c, path)), ("dangling", "web/simple/gamma")}


def plant_corrupt_metadata(c: Config) -> Found:
    path = find(c, "zeta-1.0-py3-none-any.whl.metadata")
    flip_byte(path)
    return {("corrupt", rel(c, path))}


def plant_temp_leftovers(c: Config) -> Found:
    (tree(c) / ".tmp").mkdir(exist_ok=True)
    (tree(c) / ".tmp" / "part-abc").write_bytes(b"half a file")
    (tree(c) / ".ledger.x1y2").write_text("torn")
    hidden = find(c, "iota-1.0.tar.gz").with_name(".iota-1.0.tar.gz.Xy12")
    hidden.write_bytes(b"rsync temp")
    return {("temp", ".tmp/part-abc"), ("temp", ".ledger.x1y2"), ("temp", rel(c, hidden))}


def plant_page_missing(c: Config) -> Found:
    """A ledger project without its JSON page: what it linked is now linked by nothing."""
    orphans = {("orphan", path) for path in project_files(c, "gamma")}
    (tree(c) / "web" / "simple" / "gamma" / "index.v1_json").unlink()
    return {("bad-page", "web/simple/gamma/index.v1_json"), *orphans}


def plant_page_garbled(c: Config) -> Found:
    orphans = {("orphan", path) for path in project_files(c, "kappa")}
    (tree(c) / "web" / "simple" / "kappa" / "index.v1_json").write_bytes(b'{"files": [')
    return {("bad-page", "web/simple/kappa/index.v1_json"), *orphans}


def plant_html_page_missing(c: Config) -> Found:
    (tree(c) / "web" / "simple" / "theta" / "index.html").unlink()
    return {("bad-page", "web/simple/theta/index.html")}


def plant_unlisted_project(c: Config) -> Found:
    ledger = (tree(c) / "ledger").read_text().splitlines(keepends=True)
    (tree(c) / "ledger").write_text("".join(x for x in ledger if not x.startswith("omicron ")))
    return {
        ("unlisted", "web/simple/omicron"),
        ("unlisted", "web/json/omicron"),
        ("unlisted", "web/pypi/omicron"),
    }


def plant_root_page_missing(c: Config) -> Found:
    (tree(c) / "web" / "simple" / "index.v1_html").unlink()
    return {("bad-page", "web/simple/index.v1_html")}


PLANTS: list[Callable[[Config], Found]] = [
    plant_missing,
    plant_flipped_byte,
    plant_longer_file,
    plant_orphan,
    plant_dangling_link,
    plant_missing_metadata,
    plant_corrupt_metadata,
    plant_temp_leftovers,
    plant_page_missing,
    plant_page_garbled,
    plant_html_page_missing,
    plant_unlisted_project,
    plant_root_page_missing,
]


@pytest.mark.parametrize("plant", PLANTS, ids=lambda p: p.__name__.removeprefix("plant_"))
async def test_verify_finds_exactly_the_planted_problem(
    synced: Config, plant: Callable[[Config], Found]
) -> None:
    expected = plant(synced)
    code, summary = await run_verify(synced)
    assert (code, found(summary)) == (1, expected)


async def test_quick_finds_missing_files_and_sizes_without_hashing(synced: Config) -> None:
    expected = plant_missing(synced) | plant_longer_file(synced)
    plant_flipped_byte(synced)  # same size: only hashing could tell
    code, summary = await run_verify(synced, quick=True)
    assert (code, found(summary), summary.bytes_hashed) == (1, expected, 0)


async def test_repair_restores_a_tree_that_verifies_clean(
    synced: Config, upstream: FakeUpstream
) -> None:
    before = tree_snapshot(tree(synced))
    for plant in (plant_missing, plant_flipped_byte, plant_missing_metadata):
        plant(synced)
    plant_corrupt_metadata(synced)
    plant_temp_leftovers(synced)
    plant_page_missing(synced)
    plant_root_page_missing(synced)
    code, summary = await run_verify(synced, repair=True)
    assert code == 0
    assert all(p.fixed for p in summary.problems)
    assert {p.action for p in summary.problems} == {"repaired", "resynced", "deleted"}
    again = await run_verify(synced)
    assert (again[0], found(again[1]), check_tree(tree(synced))) == (0, set(), [])
    assert tree_snapshot(tree(synced)) == before


async def test_repair_resyncs_a_project_whose_file_left_the_upstream(
    synced: Config, upstream: FakeUpstream
) -> None:
    path = find(synced, "alpha-1.0.tar.gz")
    path.unlink()
    upstream.index.remove_file("alpha", "alpha-1.0.tar.gz")
    code, summary = await run_verify(synced, repair=True)
    assert (code, {p.action for p in summary.problems}) == (0, {"resynced"})
    assert "alpha-1.0.tar.gz" not in (tree(synced) / "web/simple/alpha/index.v1_json").read_text()
    assert read_ledger(tree(synced))["alpha"].files == 3
    assert (await run_verify(synced))[0] == 0


async def test_a_repair_resync_applies_the_configured_filters(
    synced: Config, upstream: FakeUpstream
) -> None:
    """gamma 1.1 is yanked: re-synced under exclude_yanked, its files must not come back."""
    (tree(synced) / "web" / "simple" / "gamma" / "index.v1_json").unlink()
    config = config_from_mapping(
        {
            "mirror": {"directory": str(tree(synced)), "upstream": upstream.url, "json": True},
            "plugins": {"enabled": ["exclude_yanked"]},
        },
        tree(synced).parent / "mirror.toml",
    )
    code, _ = await run_verify(config, repair=True, delete_orphans=True)
    page = (tree(synced) / "web/simple/gamma/index.v1_json").read_text()
    assert (code, "gamma-1.0.tar.gz" in page, "gamma-1.1" in page) == (0, True, False)
    assert not list((tree(synced) / "web" / "packages").rglob("gamma-1.1*"))


async def test_repair_that_cannot_reach_the_upstream_reports_the_problem(
    synced: Config, upstream: FakeUpstream
) -> None:
    expected = plant_missing(synced)
    upstream.fail("/simple/beta/", status=404, times=100)
    config = config_from_mapping(
        {
            "mirror": {
                "directory": str(tree(synced)),
                "upstream": upstream.url,
                "json": True,
                "delete_removed_projects": False,
                "retries": 0,
            }
        },
        tree(synced).parent / "mirror.toml",
    )
    code, summary = await run_verify(config, repair=True)
    assert (code, found(summary)) == (1, expected)
    assert all(p.action.startswith("still wrong") for p in summary.problems)


async def test_delete_orphans_removes_only_orphans(synced: Config) -> None:
    before = tree_snapshot(tree(synced))
    planted = plant_orphan(synced)
    code, summary = await run_verify(synced, delete_orphans=True)
    assert (code, found(summary), {p.action for p in summary.problems}) == (0, planted, {"deleted"})
    assert tree_snapshot(tree(synced)) == before
    assert not (tree(synced) / "web" / "packages" / "zz").exists()  # emptied folders pruned


async def test_orphans_are_kept_while_a_page_is_unreadable(synced: Config) -> None:
    expected = plant_page_garbled(synced)
    before = tree_snapshot(tree(synced))
    code, summary = await run_verify(synced, delete_orphans=True)
    assert (code, found(summary), tree_snapshot(tree(synced))) == (1, expected, before)


async def test_dry_run_changes_nothing(synced: Config) -> None:
    for plant in (plant_missing, plant_flipped_byte, plant_orphan, plant_temp_leftovers):
        plant(synced)
    before = tree_snapshot(tree(synced))
    top = sorted(p.name for p in tree(synced).iterdir())
    code, summary = await run_verify(synced, repair=True, delete_orphans=True, dry_run=True)
    assert code == 1
    assert {p.action for p in summary.problems} == {"would repair", "would delete"}
    assert (tree_snapshot(tree(synced)), sorted(p.name for p in tree(synced).iterdir())) == (
        before,
        top,
    )


async def test_an_interrupted_verify_resumes_from_the_progress_file(synced: Config) -> None:
    corrupt = plant_flipped_byte(synced)  # alpha: first in ledger order, so in the first slice
    orphan = plant_orphan(synced)
    code, first = await run_verify(synced, limit=4)
    assert (code, first.complete, first.projects_checked, found(first)) == (1, False, 4, corrupt)
    assert (tree(synced) / PROGRESS_FILE).exists()
    code, rest = await run_verify(synced)
    # alpha had a problem left, so it is checked again; the other three are not.
    assert (rest.complete, rest.projects_skipped, rest.projects_checked) == (True, 3, 9)
    assert (code, found(rest)) == (1, corrupt | orphan)
    assert not (tree(synced) / PROGRESS_FILE).exists()


async def test_a_cancelled_verify_resumes_and_restart_ignores_progress(synced: Config) -> None:
    done: list[str] = []
    task: asyncio.Task[tuple[int, VerifySummary]] | None = None

    def stop_after_five(name: str) -> None:
        done.append(name)
        if len(done) == 5 and task is not None:
            task.cancel()

    task = asyncio.create_task(run_verify(synced, on_project=stop_after_five, workers=1))
    with pytest.raises(asyncio.CancelledError):
        await task
    assert done == sorted(done)
    code, resumed = await run_verify(synced)
    assert (code, resumed.projects_skipped) == (0, len(done))
    assert resumed.projects_checked + resumed.projects_skipped == 12
    _, partial = await run_verify(synced, limit=2)
    _, fresh = await run_verify(synced, restart=True)
    assert (partial.complete, fresh.projects_skipped, fresh.projects_checked) == (False, 0, 12)


async def test_a_torn_progress_line_is_dropped_before_appending(synced: Config) -> None:
    await run_verify(synced, limit=3)
    with (tree(synced) / PROGRESS_FILE).open("a") as f:
        f.write("d zz")  # a crash mid-write; glued to the next line, "zz..." would skip all
    _, second = await run_verify(synced, limit=3)
    code, third = await run_verify(synced)
    assert (code, second.projects_skipped, third.projects_skipped, third.projects_checked) == (
        0,
        3,
        6,
        6,
    )


async def test_quick_progress_is_not_taken_for_a_full_pass(synced: Config) -> None:
    await run_verify(synced, quick=True, limit=3)
    _, full = await run_verify(synced)
    assert (full.projects_skipped, full.projects_checked) == (0, 12)


async def test_verify_raises_locked_error_while_the_lock_is_held(synced: Config) -> None:
    with MirrorLock(tree(synced)), pytest.raises(LockedError):
        await run_verify(synced)


async def test_delete_raises_locked_error_while_the_lock_is_held(synced: Config) -> None:
    with MirrorLock(tree(synced)), pytest.raises(LockedError):
        await run_delete(synced, ["alpha"])


async def test_delete_removes_exactly_the_named_project(synced: Config) -> None:
    before = tree_snapshot(tree(synced))
    files = project_files(synced, "zope-interface-thing")
    code, summary = await run_delete(synced, ["Zope.Interface_Thing"])
    assert (code, summary.deleted, summary.files_removed) == (0, ("zope-interface-thing",), 8)
    after = tree_snapshot(tree(synced))
    gone = {k for k in before if "zope" in k.lower()}
    assert gone == files | {
        "web/simple/zope-interface-thing/index.html",
        "web/simple/zope-interface-thing/index.v1_html",
        "web/simple/zope-interface-thing/index.v1_json",
        "web/json/zope-interface-thing",
        "web/pypi/zope-interface-thing/json",
    }
    changed = {k for k in before if k not in gone and after.get(k) != before[k]}
    assert changed == {
        "web/simple/index.html",
        "web/simple/index.v1_html",
        "web/simple/index.v1_json",
    }
    assert set(after) == set(before) - gone
    assert "zope-interface-thing" not in read_ledger(tree(synced))
    root = json.loads((tree(synced) / "web/simple/index.v1_json").read_bytes())
    assert [p["name"] for p in root["projects"] if "ope" in p["name"]] == []
    assert not (tree(synced) / "web/simple/zope-interface-thing").exists()
    assert (await run_verify(synced))[0] == 0


async def test_delete_reports_unknown_names_and_deletes_the_rest(synced: Config) -> None:
    code, summary = await run_delete(synced, ["nope", "Alpha", "bad/name", "alpha"])
    assert (code, summary.deleted, set(summary.unknown)) == (1, ("alpha",), {"nope", "bad/name"})
    assert not (tree(synced) / "web/simple/alpha").exists()
    assert (await run_verify(synced))[0] == 0


async def test_delete_dry_run_changes_nothing(synced: Config) -> None:
    before = tree_snapshot(tree(synced))
    ledger = (tree(synced) / "ledger").read_bytes()
    code, summary = await run_delete(synced, ["beta"], dry_run=True)
    assert (code, summary.deleted, summary.dry_run, summary.files_removed) == (
        0,
        ("beta",),
        True,
        14,
    )
    assert (tree_snapshot(tree(synced)), (tree(synced) / "ledger").read_bytes()) == (before, ledger)


async def test_delete_folds_an_interrupted_runs_journal_and_keeps_its_removals(
    synced: Config,
) -> None:
    """A journal naming the project would bring it back into the ledger; the removals the
    interrupted run journalled must still reach the next mirror run."""
    obsolete = PurePosixPath(sorted(project_files(synced, "alpha"))[0])
    journal = Journal(tree(synced))
    journal.begin(999, 3)
    journal.done("beta", read_ledger(tree(synced))["beta"])
    journal.deleted("gone")
    journal.obsolete("alpha", obsolete)
    journal.close()
    code, _ = await run_delete(synced, ["beta"])
    left = journal.load()
    assert left is not None
    assert (code, "beta" in read_ledger(tree(synced)), left.done, left.deleted, left.obsolete) == (
        0,
        False,
        {},
        {"gone"},
        [("alpha", str(obsolete))],
    )


async def test_delete_cleans_up_an_unlisted_project(synced: Config) -> None:
    plant_unlisted_project(synced)
    code, _ = await run_delete(synced, ["omicron"])
    assert code == 0
    assert (await run_verify(synced))[0] == 0


async def test_summaries_render_as_text_and_json(synced: Config) -> None:
    plant_missing(synced)
    _, summary = await run_verify(synced)
    data = json.loads(summary.to_json())
    assert (data["found"], data["exit_code"], data["problems"][0]["kind"]) == (
        {"missing": 1, "dangling": 1},
        1,
        "missing",
    )
    assert "problems: 1 dangling, 1 missing; 0 fixed" in summary.render_text()
    _, deleted = await run_delete(synced, ["beta", "nope"])
    assert json.loads(deleted.to_json())["unknown"] == {"nope": "no such project in this mirror"}
    assert "deleted 1 projects" in deleted.render_text()


def test_link_set_membership() -> None:
    links = LinkSet()
    paths = [f"web/packages/{i:02x}/ab/cdef/p-{i}.tar.gz" for i in range(2000)]
    for path in paths[::2]:
        links.add(path)
    links.freeze()
    assert [p in links for p in paths[:6]] == [True, False, True, False, True, False]


@pytest.mark.parametrize(
    ("files", "root_uri", "expected"),
    [
        ([], None, []),
        (
            [
                {
                    "filename": "a.whl",
                    "url": "../../packages/aa/a.whl",
                    "hashes": {"sha256": "x"},
                    "core-metadata": {"sha256": "y"},
                }
            ],
            None,
            ["web/packages/aa/a.whl", "web/packages/aa/a.whl.metadata"],
        ),
        (
            [{"filename": "a.whl", "url": "https://m.example/packages/aa/a.whl", "hashes": {}}],
            "https://m.example/",
            ["web/packages/aa/a.whl"],
        ),
        ([{"filename": "a.whl", "url": "https://up.example/a.whl", "hashes": {}}], None, []),
    ],
)
def test_parse_page_links(
    files: list[dict[str, object]], root_uri: str | None, expected: list[str]
) -> None:
    body = json.dumps({"name": "a", "files": files}).encode()
    assert [link.path for link in parse_page(body, root_uri)[1]] == expected


@pytest.mark.parametrize("body", [b"", b"[]", b'{"files": {}}', b'{"files": [{"url": 1}]}'])
def test_parse_page_refuses_garbage(body: bytes) -> None:
    with pytest.raises(ValueError):  # noqa: PT011 - json's own errors are ValueErrors too
        parse_page(body, None)


def test_walk_files_lists_files_lazily(tmp_path: Path) -> None:
    for name in ("a/b/c.txt", "a/d.txt", "e.txt"):
        (tmp_path / "top" / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / "top" / name).write_text("x")
    assert sorted(walk_files(tmp_path, "top")) == ["top/a/b/c.txt", "top/a/d.txt", "top/e.txt"]
    assert list(walk_files(tmp_path, "absent")) == []
    shutil.rmtree(tmp_path / "top")
