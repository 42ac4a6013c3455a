"""Which ``Host`` and ``Origin`` headers the browser gateway answers, and which addresses it may bind.

DNS rebinding: a page on ``http://evil.example:8080`` whose name is re-pointed at 127.0.0.1 reaches the gateway with
``Host: evil.example:8080`` and ``Origin: http://evil.example:8080``; the two match each other, so a same-origin check
alone lets it in. The gateway therefore accepts only *names it knows*: loopback names and addresses (``localhost``,
127.0.0.0/8, ``::1``) with its own port, plus names given with ``--allow-host``. A request with another ``Host`` gets
421 (Misdirected Request), a browser request whose ``Origin`` is not one of those (or an ``--allow-origin``) gets 403,
for plain HTTP and WebSocket alike. A request without ``Origin`` (not a browser: tools, tests) only needs a good Host.

The gateway has no authentication, so a bind address off loopback is refused unless the caller says explicitly that
the page is exposed without authentication (``--expose-without-auth``); see :func:`check_bind`.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from a2llm_rt.errors import InputError

DEFAULT_PORTS = (80, 443)  # a browser leaves the port out of Host / Origin only for these
LOOPBACK_NAMES = ("localhost",)
_NAME = re.compile(r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?(\.[a-z0-9]([a-z0-9_-]*[a-z0-9])?)*")


def split_authority(value: str) -> tuple[str, int | None] | None:
    """``host[:port]`` as in a Host header or a URL (``[v6]:port`` for IPv6) -> ``(host, port | None)``.

    The host comes back lower-case, without brackets and without one trailing dot; None when the value is not a
    well-formed authority (user info, a path, spaces, a bad port, an unbracketed IPv6 address, ...).
    """
    v = value.strip()
    if v.startswith("["):
        end = v.find("]")
        if end < 0:
            return None
        host, rest = v[1:end], v[end + 1 :]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return None
    else:
        host, sep, port = v.partition(":")
        rest = sep + port
    port_value: int | None = None
    if rest:
        digits = rest[1:]
        if not rest.startswith(":") or not digits.isascii() or not digits.isdigit() or len(digits) > 5:
            return None
        port_value = int(digits)
        if not 0 < port_value < 65536:
            return None
    host = host.lower()
    if host.endswith(".") and not host.endswith(".."):
        host = host[:-1]
    if ":" not in host and not _NAME.fullmatch(host):
        return None
    return host, port_value


def is_loopback(host: str) -> bool:
    """``localhost``, an address in 127.0.0.0/8 or ``::1`` (brackets allowed); any other name is not."""
    host = host.strip().lower().removeprefix("[").removesuffix("]")
    if host in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, expose_without_auth: bool) -> None:
    """Refuse a bind address off loopback unless ``expose_without_auth`` (the gateway has no authentication)."""
    if not is_loopback(host) and not expose_without_auth:
        raise InputError(
            f"refusing to bind {host!r}: the viewer has no authentication, so anyone who can reach this address could "
            "drive the avatar (and the backend behind it). Bind 127.0.0.1 (the default), or pass "
            "--expose-without-auth to expose it anyway (then add the name users type with --allow-host NAME)"
        )


@dataclass(frozen=True)
class HostPolicy:
    """The Host / Origin rules for a gateway listening on ``port``.

    Args:
        port: the gateway's own port.
        allow_hosts: extra names (or addresses) accepted in Host and Origin: ``NAME`` (with the gateway's port) or
            ``NAME:PORT`` (behind a proxy that listens elsewhere); IPv6 as ``[addr]`` / ``[addr]:PORT``.
        allow_origins: extra exact origins (``scheme://host[:port]``) allowed to open the WebSocket and fetch.
    """

    port: int
    allow_hosts: tuple[str, ...] = ()
    allow_origins: tuple[str, ...] = ()
    _extra: tuple[tuple[str, int], ...] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        extra = []
        for entry in self.allow_hosts:
            parsed = split_authority(entry)
            if parsed is None or parsed[0] == "":
                raise InputError(f"--allow-host {entry!r}: expected a host name or address, optionally with :PORT")
            extra.append((parsed[0], self.port if parsed[1] is None else parsed[1]))
        for origin in self.allow_origins:
            if self._parse_origin(origin) is None:
                raise InputError(f"--allow-origin {origin!r}: expected scheme://host[:port], e.g. http://example.com")
        object.__setattr__(self, "_extra", tuple(extra))

    def _known(self, host: str, port: int | None) -> bool:
        """Is ``host`` (with ``port``, None = a default port left out) one of ours?"""
        if is_loopback(host) and (port == self.port or (port is None and self.port in DEFAULT_PORTS)):
            return True
        return any(h == host and (p == port or (port is None and p in DEFAULT_PORTS)) for h, p in self._extra)

    def host_ok(self, value: str | None) -> bool:
        """A request's Host header (None: missing) names this gateway."""
        parsed = split_authority(value) if value is not None else None
        return parsed is not None and self._known(*parsed)

    @staticmethod
    def _parse_origin(value: str) -> tuple[str, int] | None:
        try:
            u = urlsplit(value)
        except ValueError:
            return None
        if u.scheme not in ("http", "https") or u.path or u.query or u.fragment:
            return None
        parsed = split_authority(u.netloc)
        if parsed is None or not parsed[0]:
            return None
        return parsed[0], parsed[1] if parsed[1] is not None else (80 if u.scheme == "http" else 443)

    def origin_ok(self, value: str | None) -> bool:
        """A request's Origin header (None: not sent, i.e. not a browser) is this gateway's page or an allowed one."""
        if value is None or value in self.allow_origins:
            return True
        parsed = self._parse_origin(value)
        return parsed is not None and self._known(*parsed)

    def origin_patterns(self) -> list[str | re.Pattern[str] | None]:
        """The same origins for ``websockets.serve(origins=...)``: a second, coarser check behind :meth:`origin_ok`.

        Loopback addresses are matched as ``127.d.d.d``; :meth:`origin_ok` (run first, in ``process_request``) is the
        exact rule.
        """
        loop = r"localhost|127\.\d{1,3}\.\d{1,3}\.\d{1,3}|\[::1\]"
        pats: list[str | re.Pattern[str] | None] = [None, *self.allow_origins]
        pats.append(re.compile(rf"https?://({loop})\.?(:{self.port})?", re.IGNORECASE))
        for host, port in self._extra:
            name = f"[{host}]" if ":" in host else host
            pats.append(re.compile(rf"https?://{re.escape(name)}\.?(:{port})?", re.IGNORECASE))
        return pats
