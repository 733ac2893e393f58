import pytest

from tests.federation.fedutil import TestCA, start_fed_server


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
