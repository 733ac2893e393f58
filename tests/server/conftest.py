import pytest

from tests.server.harness import Client, ServerThread


@pytest.fixture
def server(tmp_path):
    srv = ServerThread(tmp_path / "data").start()
    yield srv
    srv.stop()


@pytest.fixture
def client(server):
    return Client(server.base_url)
