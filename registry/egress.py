"""The egress policy: where the portal may send a request, and how it connects there.

Every outbound request of the portal goes through this module — health probes
(``registry.prober``), the ServiceClient (workflow steps and the gateway,
``registry.client``) and alert webhooks (``registry.alerts``) — because every
registered service is untrusted: a registration is a way to make the portal call
an address of the caller's choosing.

Rules, applied to EVERY address a host resolves to (and to IP literals, in every
spelling a resolver would accept: ``127.1``, ``2852039166``, ``[::ffff:…]``):

1. IPv4 addresses embedded in IPv6 ones are unwrapped and checked too:
   ``::ffff:a.b.c.d`` (mapped), ``64:ff9b::/96`` (NAT64), ``2002::/16`` (6to4),
   ``::a.b.c.d`` (IPv4-compatible).
2. Always refused, whatever the settings: ``0.0.0.0/8``, ``169.254.0.0/16``,
   ``fe80::/10``, ``fc00::/7`` (AWS IMDS over IPv6 is ``fd00:ec2::254``),
   ``100.64.0.0/10`` (shared address space; Alibaba's metadata is
   ``100.100.100.200``), multicast, broadcast and ``::``.
3. Loopback (``127.0.0.0/8``, ``::1``) and the portal's own listening address
   are refused unless allowed: loopback by a loopback network listed in
   ``REGISTRY_ALLOWED_NETWORKS`` or by ``EGRESS_ALLOW_LOOPBACK`` (on by default
   in the development and test profiles, so the simulators work; off in
   production); the portal itself only by ``EGRESS_ALLOW_SELF``.
4. When ``REGISTRY_ALLOWED_NETWORKS`` is set, the address must lie in one of
   its networks (required in production: settings refuse to start without it).

Well-known cloud metadata host names are refused outright, before any lookup.

The caller connects to the address vetted here — never to the name, which would
mean a second lookup that a rebinding DNS server could answer differently — and
sends the original name as ``Host`` and as the TLS server name. ``resolver_use``
is the seam through which tests decide what a name resolves to.

Errors carry a ``category`` (``denied``): the only thing about a destination that
a ``read`` key may see, see ``error_category``.
"""

from __future__ import annotations

import functools
import ipaddress
import re
import socket
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

from django.conf import settings

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address

_DENIED_LABELS = {
    "0.0.0.0/8": "this network", "169.254.0.0/16": "link-local", "100.64.0.0/10": "shared address space",
    "224.0.0.0/4": "multicast", "255.255.255.255/32": "broadcast", "240.0.0.0/4": "reserved",
    "::/128": "unspecified", "fe80::/10": "link-local", "fc00::/7": "unique local",
    "ff00::/8": "multicast",
}
ALWAYS_DENIED = tuple((ipaddress.ip_network(n), label) for n, label in _DENIED_LABELS.items())
LOOPBACK = (ipaddress.ip_network("127.0.0.0/8"), ipaddress.ip_network("::1/128"))
NAT64 = ipaddress.ip_network("64:ff9b::/96")

# Names cloud providers serve instance metadata on (credentials, user data).
METADATA_NAMES = frozenset({
    "metadata", "metadata.google.internal", "metadata.goog", "instance-data",
    "instance-data.ec2.internal", "metadata.azure.internal", "metadata.tencentyun.com",
    "metadata.platformequinix.com", "metadata.packet.net", "metadata.oraclecloud.com",
})

# What inet_aton accepts: 1-4 dot-separated decimal, octal or hex numbers.
_INET_ATON_LIKE = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}$")


class EgressDenied(Exception):
    """The policy refuses this destination; the message says why (staff-only detail)."""

    category = "denied by egress policy"


class EgressLookupError(Exception):
    """The name does not resolve."""

    category = "name does not resolve"


# --- the resolver seam ---------------------------------------------------------------------------

Resolver = Callable[[str, int], list[str]]


def _system_resolve(host: str, port: int) -> list[str]:
    infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [info[4][0] for info in infos]


_resolver: Resolver = _system_resolve


@contextmanager
def resolver_use(resolve: Resolver) -> Iterator[None]:
    """Answer name lookups with ``resolve(host, port) -> [address, …]`` (tests: DNS rebinding)."""
    global _resolver
    previous, _resolver = _resolver, resolve
    try:
        yield
    finally:
        _resolver = previous


# --- addresses -----------------------------------------------------------------------------------


def literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes without DNS (every inet_aton spelling), or None for a name.

    Raises ValueError for something that looks numeric but is no address (``1.2.3.999``).
    """
    bare = host.strip("[]").rstrip(".")
    if "%" in bare:
        raise ValueError(f"zone ids are refused ({bare!r})")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _INET_ATON_LIKE.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError as exc:
            raise ValueError(f"{bare!r} is not a valid IPv4 address") from exc
    return None


def address_views(addr: IPAddress) -> list[IPAddress]:
    """The address and every IPv4 address embedded in it (mapped, NAT64, 6to4, compatible)."""
    views: list[IPAddress] = [addr]
    if isinstance(addr, ipaddress.IPv6Address):
        packed = int(addr)
        if addr.ipv4_mapped is not None:
            views.append(addr.ipv4_mapped)
        if addr in NAT64:
            views.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
        if addr.sixtofour is not None:
            views.append(addr.sixtofour)
        if packed >> 32 == 0 and packed > 1:  # ::a.b.c.d (but not :: or ::1)
            views.append(ipaddress.IPv4Address(packed & 0xFFFFFFFF))
    return views


def _connected_address(addr: IPAddress) -> IPAddress:
    """What the kernel really connects to: a mapped address is its IPv4 address."""
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        return addr.ipv4_mapped
    return addr


def _in(addr: IPAddress, networks) -> bool:
    return any(addr.version == net.version and addr in net for net in networks)


@functools.lru_cache(maxsize=1)
def _own_addresses() -> frozenset[IPAddress]:
    """This host's addresses (the portal listens on them: gunicorn binds 0.0.0.0)."""
    found: set[IPAddress] = set()
    try:
        for info in socket.getaddrinfo(socket.gethostname(), None):
            try:
                found.add(ipaddress.ip_address(info[4][0].split("%")[0]))
            except ValueError:
                pass
    except OSError:
        pass
    return frozenset(found)


def address_check(addr: IPAddress, *, port: int | None = None) -> None:
    """Raise ``EgressDenied`` naming the rule when the policy refuses ``addr`` (at ``port``)."""
    allowed = settings.REGISTRY_ALLOWED_NETWORKS
    for view in address_views(addr):
        for net, label in ALWAYS_DENIED:
            if view.version == net.version and view in net:
                shown = f"{addr}" if view == addr else f"{addr} (= {view})"
                raise EgressDenied(f"{shown} is {label} ({net}), which is always refused")
    for view in address_views(addr):
        if _in(view, LOOPBACK):
            listed = [n for n in allowed if _in(view, [n]) and _in(n.network_address, LOOPBACK)]
            if not listed and not settings.EGRESS_ALLOW_LOOPBACK:
                raise EgressDenied(
                    f"{addr} is loopback; list it in REGISTRY_ALLOWED_NETWORKS to allow it")
    if port is not None and port == settings.PORTAL_PORT and not settings.EGRESS_ALLOW_SELF:
        target = _connected_address(addr)
        if _in(target, LOOPBACK) or target in _own_addresses():
            raise EgressDenied(f"{addr}:{port} is the portal itself")
    if allowed:
        target = _connected_address(addr)
        if not _in(target, allowed):
            shown = ", ".join(str(n) for n in allowed)
            raise EgressDenied(f"{addr} is outside REGISTRY_ALLOWED_NETWORKS ({shown})")


def name_check(host: str) -> None:
    """Refuse the well-known metadata names before any lookup."""
    if host.rstrip(".").lower() in METADATA_NAMES:
        raise EgressDenied(f"{host!r} is a cloud metadata host name")


def host_resolve(host: str, port: int) -> list[IPAddress]:
    """Every address of ``host``, each vetted; raises ``EgressDenied`` if ANY is refused.

    Refusing the whole name when one address is bad (rather than using the good
    ones) keeps a name that mixes an allowed address with a metadata one useless.
    """
    addr = literal_address(host)  # ValueError for a malformed numeric host
    if addr is not None:
        address_check(addr, port=port)
        return [addr]
    name_check(host)
    try:
        raw = _resolver(host.rstrip("."), port)
    except (OSError, UnicodeError) as exc:
        raise EgressLookupError(f"{host!r} does not resolve ({exc})") from exc
    if not raw:
        raise EgressLookupError(f"{host!r} resolves to no address")
    found: list[IPAddress] = []
    for text in raw:
        resolved = ipaddress.ip_address(text.split("%")[0])
        try:
            address_check(resolved, port=port)
        except EgressDenied as exc:
            raise EgressDenied(f"{host!r} resolves to {exc}") from None
        if resolved not in found:
            found.append(resolved)
    return found


@dataclass(frozen=True)
class Destination:
    """A vetted place to connect to: the address, and the name to present there."""

    scheme: str
    host: str  # as in the URL (name or literal), without brackets
    port: int
    address: IPAddress

    @property
    def host_header(self) -> str:
        shown = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return shown if self.port == default else f"{shown}:{self.port}"

    @property
    def tls_name(self) -> str:
        return self.host.rstrip(".")

    @property
    def key(self) -> tuple[str, int]:
        """What the per-destination limits count: the address and port."""
        return str(self.address), self.port


def url_parts(url: str) -> tuple[str, str, int]:
    """(scheme, host, port) of an http(s) URL; ValueError names the problem. Credentials refused."""
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in ("http", "https"):
        raise ValueError(f"unsupported scheme {parts.scheme!r}")
    if parts.username is not None or parts.password is not None:
        raise EgressDenied("credentials in a URL are never used")
    host = parts.hostname
    if not host:
        raise ValueError("no host in URL")
    port = parts.port or (443 if scheme == "https" else 80)
    return scheme, host, port


def destination_for(url: str) -> Destination:
    """Vet ``url``'s host now (resolving a name through the seam) and pin its first good address."""
    scheme, host, port = url_parts(url)
    return Destination(scheme, host, port, host_resolve(host, port)[0])


# --- what a `read` key may see ------------------------------------------------------------------


def error_category(exc: BaseException) -> str:
    """A category for an outbound failure: never bytes from the peer."""
    import ssl

    category = getattr(exc, "category", None)
    if category:
        return category
    if isinstance(exc, TimeoutError | socket.timeout):
        return "timed out"
    if isinstance(exc, ssl.SSLError | ssl.CertificateError):
        return "TLS error"
    if isinstance(exc, ConnectionRefusedError):
        return "connection refused"
    if isinstance(exc, ConnectionError | OSError):
        return "connection failed"
    return "request failed"
