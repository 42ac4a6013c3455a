"""The gateway's Host / Origin rules (DNS rebinding) and its bind check, as pure functions."""

from __future__ import annotations

import pytest

from a2llm_rt.errors import InputError
from plugin_bridge.web.host_policy import HostPolicy, check_bind, is_loopback, split_authority


def test_split_authority():
    assert split_authority("LocalHost:8080") == ("localhost", 8080)
    assert split_authority("127.0.0.1") == ("127.0.0.1", None)
    assert split_authority("[::1]:80") == ("::1", 80)
    assert split_authority("example.com.:443") == ("example.com", 443)
    for bad in ("", ":80", "::1", "[::1", "[nope]:1", "a b:1", "user@host:1", "host:", "host:0", "host:65536",
                "host:8o", "host/x", "host:80:81", "host:١٢", "evil.example\r\nX: 1", "a..b"):  # fmt: skip
        assert split_authority(bad) is None, bad


def test_is_loopback_and_check_bind():
    for h in ("localhost", "127.0.0.1", "127.255.0.9", "::1", "[::1]"):
        assert is_loopback(h), h
        check_bind(h, expose_without_auth=False)
    for h in ("0.0.0.0", "::", "", "192.168.1.2", "10.0.0.1", "localhost.evil.example", "::ffff:127.0.0.1"):
        assert not is_loopback(h), h
        with pytest.raises(InputError, match="expose-without-auth"):
            check_bind(h, expose_without_auth=False)
        check_bind(h, expose_without_auth=True)


def test_dns_rebinding_pairs_are_refused():
    """The attacker controls a name, so Host and Origin agree with each other: only known names pass."""
    pol = HostPolicy(8080)
    for name in ("evil.example", "localhost.evil.example", "127.0.0.1.evil.example", "attacker"):
        assert not pol.host_ok(f"{name}:8080")
        assert not pol.origin_ok(f"http://{name}:8080")
    assert not pol.host_ok(None) and not pol.host_ok("")
    for host in ("localhost:8080", "127.0.0.1:8080", "127.9.9.9:8080", "[::1]:8080"):
        assert pol.host_ok(host), host
        assert pol.origin_ok(f"http://{host}") and pol.origin_ok(f"https://{host}"), host
    # our names with another port, or a default port left out, are another server
    assert not pol.host_ok("localhost:8081") and not pol.host_ok("localhost")
    assert not pol.origin_ok("http://localhost") and not pol.origin_ok("http://localhost:8081")
    # origins that are no origin at all
    for bad in ("null", "file://", "http://localhost:8080/path", "ws://localhost:8080", "localhost:8080", ""):
        assert not pol.origin_ok(bad), bad
    assert pol.origin_ok(None)  # not a browser: only the Host check applies


def test_default_ports_and_allowed_names():
    pol = HostPolicy(80, allow_hosts=("avatar.lan", "proxy.example:443", "[fd00::5]"),
                     allow_origins=("https://tool.example",))  # fmt: skip
    assert pol.host_ok("localhost") and pol.origin_ok("http://localhost")  # port 80 left out by the browser
    assert pol.host_ok("avatar.lan:80") and pol.host_ok("AVATAR.LAN") and not pol.host_ok("avatar.lan:8080")
    assert pol.host_ok("proxy.example") and pol.origin_ok("https://proxy.example")
    assert pol.host_ok("[fd00::5]:80") and pol.origin_ok("http://[fd00::5]")
    assert pol.origin_ok("https://tool.example") and not pol.host_ok("tool.example")  # an origin is not a host
    assert not pol.host_ok("sub.avatar.lan:80")
    with pytest.raises(InputError, match="allow-host"):
        HostPolicy(80, allow_hosts=("http://avatar.lan",))
    with pytest.raises(InputError, match="allow-origin"):
        HostPolicy(80, allow_origins=("tool.example",))


def test_origin_patterns_admit_what_origin_ok_admits():
    """The library's `origins=` list is a backstop: never stricter than origin_ok for names it knows."""
    pol = HostPolicy(8080, allow_hosts=("avatar.lan",), allow_origins=("https://tool.example",))
    pats = pol.origin_patterns()

    def admitted(origin):
        return any(p == origin or (hasattr(p, "fullmatch") and origin and p.fullmatch(origin)) for p in pats)

    for o in (None, "http://localhost:8080", "http://LOCALHOST.:8080", "http://127.3.2.1:8080", "http://[::1]:8080",
              "http://avatar.lan:8080", "https://tool.example"):  # fmt: skip
        assert pol.origin_ok(o) and admitted(o), o
    for o in ("http://evil.example:8080", "http://localhost.evil.example:8080", "http://avatar.lan.evil:8080"):
        assert not pol.origin_ok(o) and not admitted(o), o
