"""The outbound egress filter (private and reserved ranges refused unless allowed)."""

import pytest

from bastion.core.egress_filter import ip_allowed, parse_networks

DENIED = [
    "0.0.0.0", "10.1.2.3", "100.64.0.1", "127.0.0.1", "127.255.255.254", "169.254.169.254",
    "172.16.0.1", "172.31.255.255", "192.0.0.8", "192.0.2.1", "192.168.1.1", "198.18.0.1",
    "198.51.100.7", "203.0.113.9", "224.0.0.1", "239.1.1.1", "240.0.0.1", "255.255.255.255",
    "::1", "::", "fe80::1", "fc00::1", "fd12:3456::1", "ff02::1", "2001:db8::1",
    "::ffff:127.0.0.1", "::ffff:10.0.0.1", "64:ff9b::a00:1", "2002:c0a8:101::1", "::127.0.0.1",
    "fe80::1%eth0", "not an ip",
]  # fmt: skip
ALLOWED = ["8.8.8.8", "1.1.1.1", "172.32.0.1", "100.128.0.1", "2606:4700::1111",
           "::ffff:8.8.8.8", "64:ff9b::808:808", "192.0.1.1"]  # fmt: skip


@pytest.mark.parametrize("ip", DENIED)
def test_denied_by_default(ip):
    assert not ip_allowed(ip)


@pytest.mark.parametrize("ip", ALLOWED)
def test_public_allowed(ip):
    assert ip_allowed(ip)


def test_allow_list_lifts_exactly_its_range():
    allow = parse_networks(["127.0.0.0/8", "::1/128"])
    assert ip_allowed("127.0.0.1", allow)
    assert ip_allowed("::1", allow)
    assert ip_allowed("::ffff:127.0.0.1", allow)  # mapped loopback is loopback
    assert not ip_allowed("10.0.0.1", allow)
    assert not ip_allowed("::ffff:192.168.0.1", allow)
    assert not ip_allowed("169.254.169.254", allow)


def test_bad_cidr():
    with pytest.raises(ValueError):
        parse_networks(["300.0.0.0/8"])


def test_peer_address_unmaps_ipv4_and_drops_the_zone():
    from bastion.core.egress_filter import peer_address

    assert str(peer_address("::ffff:192.0.2.7")) == "192.0.2.7"
    assert str(peer_address("fe80::1%eth0")) == "fe80::1"
    assert peer_address("") is None and peer_address(None) is None
    assert peer_address("/run/bastion.sock") is None
