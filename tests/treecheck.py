"""An independent checker for a mirror tree, used by tests: it shares no code with the engine.

It reads the tree the way a client does (pages, then the links in them) and reports every problem:
a page that does not parse, a link to a missing file, a file whose sha256 differs from its link,
a temp or stray file under web/.
"""

from __future__ import annotations

import hashlib
import json
import posixpath
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import unquote


class _Anchors(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.anchors: list[dict[str, str | None]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "a":
            self.anchors.append(dict(attrs))


def parse_anchors(body: bytes) -> list[dict[str, str | None]]:
    parser = _Anchors()
    parser.feed(body.decode("utf-8"))
    parser.close()
    return parser.anchors


def sha256_of(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _resolve(web: Path, page_dir: str, href: str) -> Path | None:
    """A relative link from web/<page_dir>/ to a path in the tree; None for absolute URLs."""
    href = href.split("#", 1)[0]
    if "://" in href:
        return None
    rel = posixpath.normpath(posixpath.join(page_dir, unquote(href)))
    if rel.startswith(".."):
        return web / "OUTSIDE" / rel
    return web / rel


def check_tree(directory: Path) -> list[str]:
    """Every problem a client of this mirror could run into; [] for a healthy tree."""
    problems: list[str] = []
    web = directory / "web"
    simple = web / "simple"
    linked: set[Path] = set()
    for page in sorted(simple.glob("*/index.v1_json")):
        name = page.parent.name
        page_dir = f"simple/{name}"
        try:
            doc = json.loads(page.read_bytes())
        except ValueError as e:
            problems.append(f"{page}: bad JSON: {e}")
            continue
        if doc.get("name") != name:
            problems.append(f"{page}: name {doc.get('name')!r} != folder {name!r}")
        if not isinstance(doc.get("meta", {}).get("_last-serial"), int):
            problems.append(f"{page}: _last-serial is not an int")
        if "dist-info-metadata" in json.dumps(doc).replace("data-dist-info-metadata", ""):
            problems.append(f"{page}: JSON carries a dist-info-metadata key")
        json_links: dict[str, str] = {}
        for f in doc.get("files", []):
            target = _resolve(web, page_dir, f["url"])
            json_links[f["filename"]] = f["hashes"]["sha256"]
            if target is None:
                continue
            linked.add(target)
            if not target.is_file():
                problems.append(f"{name}: {f['url']} -> missing file")
                continue
            if sha256_of(target) != f["hashes"]["sha256"]:
                problems.append(f"{name}: {f['url']} -> sha256 mismatch")
            if f.get("size") is not None and target.stat().st_size != f["size"]:
                problems.append(f"{name}: {f['url']} -> size mismatch")
            core = f.get("core-metadata")
            if core:
                meta = target.with_name(target.name + ".metadata")
                linked.add(meta)
                if not meta.is_file():
                    problems.append(f"{name}: {f['url']}.metadata missing")
                elif isinstance(core, dict) and sha256_of(meta) != core.get("sha256"):
                    problems.append(f"{name}: {f['url']}.metadata sha256 mismatch")
        for html_name in ("index.html", "index.v1_html"):
            html = page.with_name(html_name)
            if not html.is_file():
                problems.append(f"{name}: {html_name} missing")
                continue
            html_links: dict[str, str] = {}
            for a in parse_anchors(html.read_bytes()):
                href = a.get("href") or ""
                filename = unquote(posixpath.basename(href.split("#", 1)[0]))
                fragment = href.split("#sha256=", 1)[1] if "#sha256=" in href else ""
                html_links[filename] = fragment
                target = _resolve(web, page_dir, href)
                if target is not None and (not target.is_file() or sha256_of(target) != fragment):
                    problems.append(f"{name}: {html_name} link {href} broken")
            if set(html_links) != set(json_links):
                problems.append(f"{name}: {html_name} and index.v1_json list different files")
    for path in web.rglob("*"):
        if path.is_file() and (path.name.startswith(".") or "part-" in path.name):
            problems.append(f"{path}: temporary file visible under web/")
    return problems


def tree_snapshot(directory: Path) -> dict[str, str]:
    """Path -> sha256 of every file under web/ (plus status): two equal snapshots, equal trees."""
    snap = {
        str(p.relative_to(directory)): sha256_of(p)
        for p in sorted((directory / "web").rglob("*"))
        if p.is_file()
    }
    status = directory / "status"
    if status.exists():
        snap["status"] = status.read_text().strip()
    return snap


def package_files(directory: Path) -> set[str]:
    """Names of the distribution files (not .metadata) under web/packages."""
    return {
        p.name
        for p in (directory / "web" / "packages").rglob("*")
        if p.is_file() and not p.name.endswith(".metadata")
    }
