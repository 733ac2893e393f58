"""The homeserver's wiring: "is federation on" is decided once, by whether a federation listener
is configured, and the services get the federation's interfaces only then."""

from __future__ import annotations

from bastion.config import Config
from bastion.server import HomeServer


def _config(tmp_path, **overrides) -> Config:
    data = tmp_path / "data"
    data.mkdir()
    return Config(server_name="localhost", data_dir=data, listen_host="127.0.0.1",
                  listen_port=0, **overrides)  # fmt: skip


def test_without_a_federation_listener_there_is_no_federation(tmp_path):
    hs = HomeServer(_config(tmp_path))
    assert hs.federation is None
    assert hs.rooms.remote is None and hs.rooms.engine.outbox is None
    assert hs.typing.room_edus is None and hs.receipts.room_edus is None
    assert hs.e2ee.remote_devices is None and hs.e2ee.to_device_outbox is None
    assert hs.background_services() == [hs.e2ee, hs.typing, hs.presence, hs.media,
                                        hs.guard.login, hs.guard.cooling.background,
                                        hs.guard.alerts]  # fmt: skip
    hs.passwords.close()
    hs.media.close()


def test_with_a_federation_listener_the_services_get_its_parts(tmp_path):
    hs = HomeServer(_config(tmp_path, federation_listen="127.0.0.1:0", tls_self_signed=True))
    fed = hs.federation
    assert fed is not None
    assert hs.rooms.remote is fed.membership and hs.rooms.engine.outbox is fed.sender
    assert hs.typing.room_edus is fed.edus and hs.receipts.room_edus is fed.edus
    assert hs.e2ee.remote_devices is fed.device_lists and hs.e2ee.to_device_outbox is fed.edus
    assert fed.events is not None and fed.edu_handlers is fed.inbound.federation_edu_handlers
    assert {"m.typing", "m.receipt", "m.device_list_update"} <= set(fed.edu_handlers)
    assert fed.sender in hs.background_services() and fed.device_lists in hs.background_services()
    hs.passwords.close()
    hs.media.close()
