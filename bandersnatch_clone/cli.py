"""Command line: parse arguments, load the config, run a command, map errors to exit codes."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import sys
from collections.abc import Sequence
from pathlib import Path, PurePosixPath
from typing import Protocol

import humanfriendly

from bandersnatch_clone import __version__
from bandersnatch_clone.config import Config, load_config, render_starter_config
from bandersnatch_clone.errors import (
    ConfigError,
    LockedError,
    MirrorError,
    PluginError,
    StorageError,
    UsageError,
)
from bandersnatch_clone.state import (
    Journal,
    Ledger,
    read_ledger,
    read_listing_state,
    read_status,
)

log = logging.getLogger("bandersnatch_clone")


class _Summary(Protocol):
    def render_text(self) -> str: ...
    def to_json(self) -> str: ...


EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_LOCKED = 0, 1, 2, 3
DEFAULT_CONFIG = "bandersnatch-clone.toml"
CONFIG_ENV = "BANDERSNATCH_CLONE_CONFIG"

DESCRIPTION = """\
Keep a directory in step with PyPI (or any PEP 691 index) and serve it to pip and uv.

A typical setup:
  bandersnatch-clone init mirror.toml --directory /srv/pypi   # write a commented config
  bandersnatch-clone -c mirror.toml mirror                    # first run: everything
  */5 * * * * bandersnatch-clone -c /etc/mirror.toml mirror   # cron: only what changed

The config file is taken from -c, else $BANDERSNATCH_CLONE_CONFIG, else ./bandersnatch-clone.toml.
"""

EPILOG = """\
exit codes:
  0  the mirror is in step with the upstream (or the command succeeded)
  1  some projects failed; they stay pending and the next run retries them
  2  bad configuration or usage (the message names the file and key)
  3  another run holds the mirror's lock
  4  the run finished but held back removals (removal_guard): see the log, then
     run `mirror --allow-removals` if the upstream really dropped those projects
"""


def _config_path(args: argparse.Namespace) -> str:
    return str(args.config or os.environ.get(CONFIG_ENV) or DEFAULT_CONFIG)


def _load(args: argparse.Namespace) -> Config:
    return load_config(_config_path(args))


def _setup_logging(args: argparse.Namespace) -> None:
    level = logging.DEBUG if args.verbose else logging.WARNING if args.quiet else logging.INFO
    logging.basicConfig(
        level=level,
        stream=sys.stderr,
        format="%(asctime)s %(levelname)s %(message)s",
        datefmt="%Y-%m-%d %H:%M:%S",
    )
    # aiohttp's own access chatter is noise for an operator.
    logging.getLogger("aiohttp").setLevel(logging.WARNING)


def cmd_mirror(args: argparse.Namespace, names: Sequence[str] | None = None) -> int:
    from bandersnatch_clone.mirror import run
    from bandersnatch_clone.progress import Progress

    config = _load(args)
    progress = Progress(sys.stderr, live=sys.stderr.isatty() and not args.quiet)
    try:
        allow = getattr(args, "allow_removals", False)
        outcome = asyncio.run(run(config, names=names, reporter=progress, allow_removals=allow))
    finally:
        progress.close()
    summary = progress.summary(
        serial_before=outcome.serial_before,
        serial_after=outcome.serial_after,
        deleted=len(outcome.result.deleted),
        exit_code=outcome.exit_code,
        removals_held=outcome.removals_held,
    )
    if outcome.result.aborted:
        print(f"bandersnatch-clone: run stopped early: {outcome.result.aborted}", file=sys.stderr)
    _print_summary(args, summary)
    return outcome.exit_code


def cmd_sync(args: argparse.Namespace) -> int:
    return cmd_mirror(args, names=args.names)


def _print_summary(args: argparse.Namespace, summary: _Summary) -> None:
    if args.json:
        print(summary.to_json())
    else:
        print(summary.render_text(), file=sys.stderr)


def cmd_verify(args: argparse.Namespace) -> int:
    from bandersnatch_clone.verify import run_verify

    config = _load(args)
    code, summary = asyncio.run(
        run_verify(
            config,
            repair=args.repair,
            delete_orphans=args.delete_orphans,
            dry_run=args.dry_run,
            quick=args.quick,
            restart=args.restart,
            workers=args.workers,
            limit=args.limit,
        )
    )
    _print_summary(args, summary)
    return code


def cmd_delete(args: argparse.Namespace) -> int:
    from bandersnatch_clone.delete import run_delete

    config = _load(args)
    code, summary = asyncio.run(run_delete(config, args.names, dry_run=args.dry_run))
    _print_summary(args, summary)
    return code


def cmd_config_convert(args: argparse.Namespace) -> int:
    from bandersnatch_clone.convert import convert_bandersnatch_config

    source = Path(args.file)
    try:
        text = source.read_text(encoding="utf-8")
    except OSError as e:
        raise ConfigError(str(source), None, e.strerror or str(e)) from None
    toml_text, warnings = convert_bandersnatch_config(text, str(source))
    for warning in warnings:
        print(f"bandersnatch-clone: warning: {warning}", file=sys.stderr)
    if args.output:
        Path(args.output).write_text(toml_text, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(toml_text)
    return EXIT_OK


def cmd_status(args: argparse.Namespace) -> int:
    config = _load(args)
    directory = config.mirror.directory
    ledger = read_ledger(directory) if directory.exists() else Ledger()
    files, size = ledger.totals()
    journal = Journal(directory).load() if directory.exists() else None
    seen = read_listing_state(directory) if directory.exists() else None
    held = seen.held if seen is not None else 0
    info: dict[str, object] = {
        "directory": str(directory),
        "upstream": config.mirror.upstream,
        "serial": read_status(directory) if directory.exists() else 0,
        "projects": len(ledger),
        "files": files,
        "bytes": size,
        "interrupted_run": None
        if journal is None
        else {
            "target_serial": journal.target_serial,
            "planned": journal.planned,
            "done": len(journal.done) + len(journal.deleted),
        },
        "removals_held": held,
    }
    code, published = EXIT_OK, None
    if config.storage.backend != "filesystem":
        # The tree is elsewhere: say which serial it says it serves (one read of its copy).
        code, info["published"], published = _published(config, int(str(info["serial"])))
    if args.json:
        print(json.dumps(info, indent=2))
        return code
    print(f"directory:  {info['directory']}")
    print(f"upstream:   {info['upstream']}")
    print(f"serial:     {info['serial']}")
    if published is not None:
        print(f"published:  {published}")
    print(f"projects:   {len(ledger):,}")
    print(f"files:      {info['files']:,}")
    print(f"size:       {humanfriendly.format_size(int(str(info['bytes'])))}")
    if journal is None:
        print("pending:    nothing (the last run completed)")
    else:
        done = len(journal.done) + len(journal.deleted)
        print(
            f"pending:    an interrupted run towards serial {journal.target_serial}: "
            f"{done} of {journal.planned} projects done; `mirror` resumes it"
        )
    if held:
        print(
            f"held:       {held:,} removals beyond removal_guard; "
            "`mirror --allow-removals` carries them out"
        )
    return code


async def _read_published(config: Config) -> int | None:
    """The tree's copy of ``status`` (what `mirror.publish_status` wrote last); None before a
    run completed."""
    from bandersnatch_clone.storage.loader import open_storage

    async with open_storage(config) as tree:
        data = await tree.read_bytes(PurePosixPath("status"))
    if data is None:
        return None
    try:
        return int(data.decode("ascii"))
    except ValueError:
        raise StorageError("status", f"not a serial in the tree's copy: {data[:40]!r}") from None


def _published(config: Config, serial: int) -> tuple[int, dict[str, object], str]:
    """`status` on an object store: (exit code, what the tree's copy of ``status`` says, and
    that in words)."""
    where = f"{config.storage.backend} storage"
    try:
        found = asyncio.run(_read_published(config))
    except StorageError as e:
        return EXIT_FAILED, {"serial": None, "in_step": False, "error": str(e)}, f"unreadable: {e}"
    if found is None:
        line = f"nothing yet: no run has completed into the {where}"
    elif found == serial:
        line = f"{found}, in step with the local serial ({where})"
    elif found > serial:
        line = (
            f"{found}, AHEAD of the local serial {serial} ({where}): a run stopped between "
            "publishing and recording it; the next `mirror` settles it"
        )
    else:
        line = (
            f"{found}, DIFFERS from the local serial {serial} ({where}): the tree was last "
            "published by another state directory, or a run could not publish"
        )
    in_step = found == serial or (found is None and serial == 0)
    return EXIT_OK, {"serial": found, "in_step": in_step}, line


def cmd_init(args: argparse.Namespace) -> int:
    path = Path(args.path)
    if path.exists() and not args.force:
        print(f"{path} exists; use --force to overwrite it", file=sys.stderr)
        return EXIT_USAGE
    text = render_starter_config(args.directory)
    if args.upstream:
        text = text.replace('upstream = "https://pypi.org"', f'upstream = "{args.upstream}"', 1)
    path.write_text(text, encoding="utf-8")
    load_config(path)  # never hand out a config we would refuse
    print(f"wrote {path}; edit it, then run: bandersnatch-clone -c {path} mirror", file=sys.stderr)
    return EXIT_OK


def cmd_serve(args: argparse.Namespace) -> int:
    from bandersnatch_clone.serve import run_serve

    target = Path(args.target) if args.target else Path(_config_path(args))
    if target.is_dir():
        directory = target
    else:
        config = load_config(target)
        if config.storage.backend != "filesystem":
            from bandersnatch_clone.serve_store import run_serve_store

            run_serve_store(config, args.bind, log_requests=args.log_requests)
            return EXIT_OK
        directory = config.mirror.directory
    if not (directory / "web").is_dir():
        raise ConfigError(str(directory), None, "no web/ folder here: not a mirror directory")
    run_serve(directory, args.bind, log_requests=args.log_requests)
    return EXIT_OK


def _local_tree(config: Config, command: str, why: str) -> Config:
    """Commands that only make sense for a tree of local files: the filesystem backend only."""
    if config.storage.backend != "filesystem":
        raise UsageError(
            f"`{command}` needs the filesystem storage backend, not "
            f"{config.storage.backend!r}: {why}"
        )
    return config


def cmd_export(args: argparse.Namespace) -> int:
    from bandersnatch_clone.export import run_export

    summary = asyncio.run(
        run_export(
            _load(args),
            Path(args.out),
            since=args.since,
            since_last=args.since_last,
            compress=not args.no_compress,
        )
    )
    _print_summary(args, summary)
    return summary.exit_code


def cmd_import(args: argparse.Namespace) -> int:
    from bandersnatch_clone.importer import run_import

    config = _local_tree(
        _load(args),
        "import",
        "it stages and renames files inside the mirror directory; import into a filesystem "
        "mirror and sync the bucket from it (docs/airgap.md)",
    )
    summary = run_import(config, Path(args.bundle), force=args.force)
    _print_summary(args, summary)
    return summary.exit_code


def cmd_snapshot(args: argparse.Namespace) -> int:
    from bandersnatch_clone.snapshot import take_snapshot

    config = _local_tree(
        _load(args),
        "snapshot",
        "hard links exist only on a file system; a bucket's copy is the store's own business "
        "(versioning, replication: docs/airgap.md), or `export --since 0` it",
    )
    summary = take_snapshot(
        config.mirror.directory,
        Path(args.dir),
        keep=args.keep,
        root_uri=config.mirror.root_uri or None,
    )
    _print_summary(args, summary)
    return summary.exit_code


def build_parser() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "-c", "--config", default=argparse.SUPPRESS, help="config file (TOML)", metavar="FILE"
    )
    common.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="debug logging"
    )
    common.add_argument(
        "-q", "--quiet", action="store_true", default=argparse.SUPPRESS, help="warnings only"
    )
    common.add_argument(
        "--json",
        action="store_true",
        default=argparse.SUPPRESS,
        help="print a machine-readable summary on stdout",
    )
    parser = argparse.ArgumentParser(
        prog="bandersnatch-clone",
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        parents=[common],
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    def add(name: str, help_: str, description: str) -> argparse.ArgumentParser:
        return sub.add_parser(
            name,
            help=help_,
            description=description,
            epilog=EPILOG,
            parents=[common],
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )

    p = add(
        "mirror",
        "bring the mirror in step with the upstream",
        "Fetch every project whose serial moved since the last run (everything on the first\n"
        "run), delete projects removed upstream, then write the root index and the serial.\n"
        "An interrupted run is resumed; failed projects are retried by the next run.\n"
        "More removals than removal_guard allows (5% of the mirror) are held back, exit 4.",
    )
    p.add_argument(
        "--allow-removals",
        action="store_true",
        help="remove what left the upstream's listing, or what it answers 404 for, however "
        "much it is (lifts removal_guard for this run)",
    )
    p.set_defaults(func=cmd_mirror)
    p = add(
        "sync",
        "sync the named projects now",
        "Fetch the named projects now, whatever their serial, and update the root index.\n"
        "The mirror's serial is not moved: the next `mirror` still looks at everything.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="project names")
    p.set_defaults(func=cmd_sync)
    p = add(
        "status",
        "show the mirror's serial, size and pending work",
        "Read the mirror's state files (no network): serial, projects, files, bytes,\n"
        "and whether an interrupted run is waiting to be resumed. With an object store, also\n"
        "the serial the bucket publishes (one read), flagged when it differs (exit 1 when\n"
        "the bucket cannot be read).",
    )
    p.set_defaults(func=cmd_status)
    p = add(
        "init",
        "write a commented starter config",
        "Write a starter config file with every option explained.",
    )
    p.add_argument("path", help="where to write the config (e.g. mirror.toml)")
    p.add_argument("--directory", default="mirror", help="mirror directory (default: ./mirror)")
    p.add_argument("--upstream", default=None, help="upstream index URL (default: PyPI)")
    p.add_argument("--force", action="store_true", help="overwrite an existing file")
    p.set_defaults(func=cmd_init)
    p = add(
        "verify",
        "check every file against the hashes in the pages",
        "Hash every file the project pages link to and compare with the pages; report missing\n"
        "and corrupt files, orphans (files no page links to), pages that link to nothing, and\n"
        "temp leftovers. Streams (memory flat in mirror size), uses every core, resumes an\n"
        "interrupted pass. Exit code 0 when the mirror is clean, 1 when problems remain.",
    )
    p.add_argument("--repair", action="store_true", help="re-download missing and corrupt files")
    p.add_argument("--delete-orphans", action="store_true", help="remove files no page links to")
    p.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    p.add_argument("--quick", action="store_true", help="pages vs files and sizes, no hashing")
    p.add_argument("--restart", action="store_true", help="ignore an interrupted pass's progress")
    p.add_argument(
        "--workers",
        type=int,
        default=None,
        help="hashing threads (default: two per core); on an object store, requests at once "
        "(default: download_workers)",
    )
    p.add_argument(
        "--limit",
        type=int,
        metavar="N",
        default=None,
        help="stop after N projects; the next verify goes on from there",
    )
    p.set_defaults(func=cmd_verify)
    p = add(
        "delete",
        "remove projects from the mirror",
        "Remove the named projects: root index entry, pages, JSON copies, files. A project the\n"
        "upstream still lists comes back at the next `mirror` unless a filter excludes it.",
    )
    p.add_argument("names", nargs="+", metavar="NAME", help="project names")
    p.add_argument("--dry-run", action="store_true", help="report only; change nothing")
    p.set_defaults(func=cmd_delete)
    p = add(
        "config",
        "configuration tools",
        "Configuration tools. `config convert bandersnatch.conf` translates a bandersnatch\n"
        "config (mirror options and filter plugins) to this tool's TOML and names anything it\n"
        "cannot carry over.",
    )
    config_sub = p.add_subparsers(dest="config_command", metavar="ACTION", required=True)
    c = config_sub.add_parser(
        "convert", help="translate a bandersnatch.conf to TOML", parents=[common]
    )
    c.add_argument("file", help="the bandersnatch.conf to read")
    c.add_argument("-o", "--output", help="write the TOML here (default: stdout)")
    c.set_defaults(func=cmd_config_convert)
    p = add(
        "serve",
        "serve the mirror over HTTP (development and small sites)",
        "Serve the tree read-only with PEP 691 content negotiation, conditional and Range\n"
        "requests, from the mirror directory or, with a config whose storage is an object\n"
        "store, from the bucket. For a busy site use nginx (examples/nginx.conf,\n"
        "examples/nginx-s3.conf) instead.",
    )
    p.add_argument("target", nargs="?", help="mirror directory or config file")
    p.add_argument("--bind", default="127.0.0.1:8080", help="HOST:PORT (default 127.0.0.1:8080)")
    p.add_argument("--log-requests", action="store_true", help="log one line per request")
    p.set_defaults(func=cmd_serve)
    p = add(
        "export",
        "write a bundle of what changed since a serial (air-gapped mirrors)",
        "Write a bundle (tar.gz) of every file, page and JSON copy that changed between a serial\n"
        "and the mirror's current one, the paths deleted since, the state files, and a manifest\n"
        "with every path's size and sha256. Carry it across and run `import` on the other side.\n"
        "--since 0 exports everything (to seed a new offline mirror); --since-last continues\n"
        "from where the previous export ended. OUT is the bundle file, or a folder to write\n"
        "bundle-<from>-<to>.tar.gz in. Takes the mirror's lock. See docs/airgap.md.",
    )
    since = p.add_mutually_exclusive_group(required=True)
    since.add_argument(
        "--since", type=int, metavar="SERIAL", help="the serial the other side is at (0: all)"
    )
    since.add_argument(
        "--since-last", action="store_true", help="from the serial the previous export ended at"
    )
    p.add_argument("--no-compress", action="store_true", help="plain tar (packages are packed)")
    p.add_argument("out", metavar="OUT", help="bundle file, or a folder to write it in")
    p.set_defaults(func=cmd_export)
    p = add(
        "import",
        "apply a bundle written by `export` (the offline side)",
        "Check every file of the bundle against its manifest (sha256 and size) in a staging\n"
        "folder inside the mirror, then move them into place: files, project pages, the root\n"
        "index, deletions, the serial last. A bundle that does not start at this mirror's serial,\n"
        "or that is damaged, is refused and nothing changes (exit 1). Interrupted, the mirror\n"
        "keeps serving; run the same import again to finish it. A full bundle (from serial 0)\n"
        "seeds an empty mirror, or with --force replaces a mirror's whole tree.",
    )
    p.add_argument("bundle", metavar="BUNDLE", help="the bundle file")
    p.add_argument(
        "--force", action="store_true", help="apply even if it does not start at this serial"
    )
    p.set_defaults(func=cmd_import)
    p = add(
        "snapshot",
        "a frozen copy of the tree made of hard links, for rsync",
        "Make DIR/<UTC time>/ : hard links (no data copied) of web/ and the state files, taken\n"
        "consistently even while a sync runs (no lock needed), and point DIR/latest at it. rsync\n"
        "DIR/latest/ while the next sync goes on. DIR must be on the mirror's file system and\n"
        "not under web/. The oldest snapshots beyond --keep are removed.",
    )
    p.add_argument("dir", metavar="DIR", help="where snapshots are kept")
    p.add_argument("--keep", type=int, default=3, metavar="N", help="snapshots kept (default 3)")
    p.set_defaults(func=cmd_snapshot)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    for name, default in (("config", None), ("verbose", False), ("quiet", False), ("json", False)):
        if not hasattr(args, name):
            setattr(args, name, default)
    _setup_logging(args)
    try:
        code: int = args.func(args)
        return code
    except (ConfigError, PluginError, UsageError) as e:
        print(f"bandersnatch-clone: error: {e}", file=sys.stderr)
        return EXIT_USAGE
    except LockedError as e:
        print(f"bandersnatch-clone: {e}; exiting", file=sys.stderr)
        return EXIT_LOCKED
    except MirrorError as e:
        print(f"bandersnatch-clone: error: {e}", file=sys.stderr)
        return EXIT_FAILED
    except KeyboardInterrupt:
        print("bandersnatch-clone: interrupted; the next run resumes", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
