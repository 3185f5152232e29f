"""Scenario (e), the ceiling: a plain parallel download + sha256 of a list of files, written to
disk. No pages, no state, no retries: what the upstream and the disk deliver at all.

``python -m benchmarks.limit FILES.json DEST [--concurrency N]``; FILES.json is a list of
``{"url", "sha256", "size"}``. Exits 1 if any digest differs.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
from pathlib import Path

import aiohttp

CHUNK = 256 * 1024


async def fetch(
    session: aiohttp.ClientSession, slots: asyncio.Semaphore, spec: dict[str, str], dest: Path
) -> bool:
    async with slots:
        digest = hashlib.sha256()
        target = dest / spec["url"].rsplit("/", 1)[-1]
        async with session.get(spec["url"]) as resp:
            resp.raise_for_status()
            with target.open("wb") as out:  # the plainest possible writer
                async for chunk in resp.content.iter_chunked(CHUNK):
                    digest.update(chunk)
                    out.write(chunk)
        return digest.hexdigest() == spec["sha256"]


async def download_all(files: list[dict[str, str]], dest: Path, concurrency: int) -> int:
    slots = asyncio.Semaphore(concurrency)
    connector = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=connector, auto_decompress=False) as session:
        results = await asyncio.gather(*(fetch(session, slots, f, dest) for f in files))
    return sum(not ok for ok in results)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.limit")
    parser.add_argument("files", type=Path)
    parser.add_argument("dest", type=Path)
    parser.add_argument("--concurrency", type=int, default=16)
    args = parser.parse_args(argv)
    files = json.loads(args.files.read_text())
    args.dest.mkdir(parents=True, exist_ok=True)
    bad = asyncio.run(download_all(files, args.dest, args.concurrency))
    if bad:
        print(f"{bad} files failed their sha256 check", file=sys.stderr)
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
