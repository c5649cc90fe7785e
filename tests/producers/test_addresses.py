"""Which addresses the crawler may reach, and what of a URL's credentials a report may show.

Pure classification: nothing here resolves a name or opens a socket.
"""

from __future__ import annotations

import pytest

from producers.addresses import AddressRefused, refusal, vetted
from producers.git import redact_credentials

# address -> a word the refusal must contain, or None where the crawler may connect.
ADDRESSES: dict[str, str | None] = {
    # Globally routable unicast: allowed.
    "8.8.8.8": None,
    "1.1.1.1": None,
    "93.184.216.34": None,
    "2606:4700:4700::1111": None,
    "2001:4860:4860::8888": None,
    "::ffff:8.8.8.8": None,  # IPv4-mapped, of a public address
    "64:ff9b::808:808": None,  # NAT64 well-known prefix, of a public address
    "2002:808:808::1": None,  # 6to4, of a public address
    # IPv4 special-purpose ranges.
    "0.0.0.0": "'this network'",
    "0.1.2.3": "'this network'",
    "10.0.0.1": "private",
    "100.64.0.1": "shared address space",
    "100.100.100.200": "shared address space",  # a cloud's metadata service
    "127.0.0.1": "loopback",
    "127.255.255.254": "loopback",
    "169.254.169.254": "link-local",
    "172.16.0.1": "private",
    "172.31.255.255": "private",
    "192.0.0.8": "IETF protocol assignments",
    "192.0.2.1": "documentation",
    "192.88.99.1": "6to4 relay",
    "192.168.1.1": "private",
    "198.18.0.1": "benchmarking",
    "198.19.255.255": "benchmarking",
    "198.51.100.7": "documentation",
    "203.0.113.9": "documentation",
    "224.0.0.1": "multicast",
    "239.255.255.250": "multicast",
    "240.0.0.1": "reserved",
    "255.255.255.255": "broadcast",
    # IPv6 special-purpose ranges.
    "::": "unspecified",
    "::1": "loopback",
    "::127.0.0.1": "outside IPv6 global unicast",  # deprecated IPv4-compatible
    "100::1": "discard-only",
    "2001:db8::1": "documentation",
    "2001:2::1": "IETF protocol assignments",
    "3fff::1": "documentation",
    "fc00::1": "unique local",
    "fd12:3456::1": "unique local",
    "fe80::1": "link-local",
    "fe80::1%eth0": "link-local",
    "fec0::1": "site-local",
    "ff02::1": "multicast",
    "4000::1": "outside IPv6 global unicast",
    "64:ff9b:1::a00:1": "local-use NAT64",
    # IPv6 addresses carrying a refused IPv4 address inside.
    "::ffff:127.0.0.1": "IPv4-mapped address of 127.0.0.1",
    "::ffff:10.1.2.3": "IPv4-mapped address of 10.1.2.3",
    "::ffff:169.254.169.254": "IPv4-mapped address of 169.254.169.254",
    "2002:7f00:1::": "6to4 address of 127.0.0.1",
    "2002:a9fe:a9fe::1": "6to4 address of 169.254.169.254",
    "64:ff9b::a00:1": "NAT64 address of 10.0.0.1",
    "64:ff9b::7f00:1": "NAT64 address of 127.0.0.1",
    "64:ff9b::6464:64c8": "NAT64 address of 100.100.100.200",
    # Teredo: server 65.54.227.120, client (obfuscated) 10.0.0.1.
    "2001:0:4136:e378:8000:63bf:f5ff:fffe": "Teredo address of 10.0.0.1",
    # Teredo with a private server, and one whose both ends are public: still a tunnel.
    "2001:0:c0a8:101::1": "Teredo address of 192.168.1.1",
    "2001:0:808:808:0:f7f7:f7f7:f7f7": "Teredo tunnel",
    # Not an address at all.
    "localhost": "not an IP address",
    "": "not an IP address",
}


@pytest.mark.parametrize(
    ("address", "refused_as"), ADDRESSES.items(), ids=[a or "empty" for a in ADDRESSES]
)
def test_only_globally_routable_unicast_is_allowed(address: str, refused_as: str | None) -> None:
    reason = refusal(address)
    if refused_as is None:
        assert reason is None
    else:
        assert reason is not None and refused_as in reason, reason


def test_one_refused_address_refuses_the_name_and_says_which() -> None:
    with pytest.raises(AddressRefused) as refused:
        vetted("mixed.example", ["93.184.216.34", "10.0.0.7"], allow_private_networks=False)

    message = str(refused.value)
    assert "mixed.example" in message
    assert "10.0.0.7 (private (10.0.0.0/8))" in message
    assert "93.184.216.34" not in message
    assert "--allow-private-networks" in message


def test_allowed_addresses_come_back_in_order_without_repeats() -> None:
    resolved = ["2606:4700:4700::1111", "1.1.1.1", "2606:4700:4700::1111"]
    assert vetted("one.one", resolved, allow_private_networks=False) == [
        "2606:4700:4700::1111",
        "1.1.1.1",
    ]


def test_allow_private_networks_lets_a_local_site_through_but_never_no_address() -> None:
    assert vetted("lan", ["192.168.1.2"], allow_private_networks=True) == ["192.168.1.2"]
    with pytest.raises(AddressRefused, match="no address"):
        vetted("nothing", [], allow_private_networks=True)


TOKEN = "ghp_16C7e42F292c6912E7710c838347Ae178B4a"

# (url, text that names it) -> what a report may show instead.
REDACTIONS = [
    # A token given as the user name, as GitHub accepts it.
    (
        f"https://{TOKEN}@github.com/o/r",
        f"fatal: unable to access 'https://{TOKEN}@github.com/o/r/': 403 for {TOKEN}",
        "fatal: unable to access 'https://***@github.com/o/r/': 403 for ***",
    ),
    # The password of user:password, spelled raw and percent-decoded.
    (
        "https://alice:s3cr%2Ft@gitlab.example/o/r.git",
        "https://alice:s3cr%2Ft@gitlab.example/o/r.git: denied (s3cr/t)",
        "https://***@gitlab.example/o/r.git: denied (***)",
    ),
    # A short user name is blanked where it stands in the URL only.
    (
        "https://ab@host.example/r.git",
        "https://ab@host.example/r.git: a bad answer",
        "https://***@host.example/r.git: a bad answer",
    ),
    # An ssh account name is not a secret, and a URL without user info changes nothing.
    ("ssh://git@host.example/r", "ssh: connect to host.example failed", None),
    ("https://github.com/o/r", "HTTP 404 for https://github.com/o/r", None),
]


@pytest.mark.parametrize(("url", "text", "shown"), REDACTIONS)
def test_credentials_in_a_url_never_reach_a_report(url: str, text: str, shown: str | None) -> None:
    assert redact_credentials(text, url) == (text if shown is None else shown)
