"""Shared fixtures: a fake PyPI upstream on a loopback port, fresh for each test."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from tests.fake_upstream import FakeIndex, FakeUpstream

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
