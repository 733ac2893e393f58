"""Fixtures for the whole suite: a Bastion on a background thread with a client (``server``,
``client``), and for federation a session-wide test CA (``test_ca``) and two TLS Bastions
(``fed_pair``). The helpers behind them live in tests/support/."""

import pytest

from tests.support import at_rest
from tests.support.federation import TestCA, start_fed_server
from tests.support.harness import Client, ServerThread

if at_rest.enabled():  # BASTION_TEST_AT_REST=1: the suite with encryption at rest on
    at_rest.install()


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return Client(server.base_url)


@pytest.fixture(scope="session")
def test_ca(tmp_path_factory):
    return TestCA(tmp_path_factory.mktemp("ca"))


@pytest.fixture
def fed_pair(tmp_path, test_ca):
    a = start_fed_server(tmp_path, test_ca, "a")
    b = start_fed_server(tmp_path, test_ca, "b")
    yield a, b
    a.stop()
    b.stop()
