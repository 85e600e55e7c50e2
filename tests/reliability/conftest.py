"""Fixtures of the reliability scenarios: every subprocess and proxy is torn down at the end,
whatever happened."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.reliability.harness import Processes
from tests.reliability.proxy import PgProxy


@pytest.fixture
def procs() -> Iterator[Processes]:
    processes = Processes()
    try:
        yield processes
    finally:
        processes.cleanup()


@pytest.fixture
def make_proxy(pg_server):
    """Proxies to the test server; closed (every connection dropped) at the end."""
    proxies: list[PgProxy] = []

    def make() -> PgProxy:
        proxy = PgProxy(pg_server.host, pg_server.port)
        proxies.append(proxy)
        return proxy

    try:
        yield make
    finally:
        for proxy in proxies:
            proxy.close()


@pytest.fixture
def restartable(pg_server):
    if not pg_server.can_restart:
        pytest.skip("an external test server (TEST_PGHOST) cannot be stopped")
    return pg_server
