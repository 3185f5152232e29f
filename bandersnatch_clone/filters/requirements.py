"""Requirements files for ``project_requirements`` and ``project_requirements_pinned``.

The ``[allowlist]`` table names them: ``requirements_path`` (a folder; relative to the config
file's folder, default that folder) and ``requirements`` (file names or globs in it). They are
read once, when the plugins are built.
"""

from __future__ import annotations

import glob
from collections.abc import Iterator
from pathlib import Path

from packaging.requirements import Requirement

from bandersnatch_clone.errors import PluginError
from bandersnatch_clone.filters.options import Options, parse_requirement, strip_comment

_GLOB_CHARS = frozenset("*?[")


def requirement_files(options: Options, base: Path) -> list[Path]:
    """The files ``[allowlist] requirements`` names, globs expanded (sorted), in order."""
    folder_text = options.string("requirements_path")
    folder = base / Path(folder_text).expanduser() if folder_text else base
    files: list[Path] = []
    for entry in options.strings("requirements"):
        entry = strip_comment(entry)
        if not entry:
            continue
        if _GLOB_CHARS & set(entry):
            matches = sorted(Path(p) for p in glob.glob(str(folder / entry)))
            if not matches:
                raise options.error("requirements", f"no file matches {entry!r} in {folder}")
            files.extend(matches)
        else:
            files.append(folder / entry)
    return files


def _logical_lines(text: str) -> Iterator[tuple[int, str]]:
    """(line number, line) with backslash continuations joined, as pip reads them."""
    pending: list[str] = []
    start = 0
    for number, line in enumerate(text.splitlines(), start=1):
        if not pending:
            start = number
        if line.endswith("\\"):
            pending.append(line[:-1])
            continue
        pending.append(line)
        yield start, " ".join(pending)
        pending = []
    if pending:
        yield start, " ".join(pending)


def read_requirements(path: Path, options: Options) -> list[Requirement]:
    """The requirements in one file: comments, blank lines and pip options (``-r``, ``-e``,
    ``--index-url``; ``--hash`` after a requirement) are skipped."""
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except OSError as exc:
        raise options.error("requirements", f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise options.error("requirements", f"{path} is not UTF-8 text: {exc}") from exc
    found: list[Requirement] = []
    for number, line in _logical_lines(text):
        line = strip_comment(line)
        if not line or line.startswith("-"):
            continue
        line = line.split(" --", 1)[0].split("\t--", 1)[0]

        def error(problem: str, where: str = f"{path}, line {number}") -> PluginError:
            return options.error("requirements", f"{where}: {problem}")

        found.append(parse_requirement(line, error))
    return found


def load_requirements(options: Options, base: Path) -> list[Requirement]:
    """Every requirement in every file ``[allowlist]`` names."""
    found: list[Requirement] = []
    for path in requirement_files(options, base):
        found.extend(read_requirements(path, options))
    return found
