"""Checks on where a registered service may point the portal (its url and health_url).

The portal sends requests to whatever a service registers, so a registration is
a way to make the portal call an address of the caller's choosing (SSRF). Rules:

* http or https only, with a host; no credentials in the URL.
* Link-local addresses (169.254.0.0/16 — cloud metadata endpoints live there —
  and fe80::/10) are always refused, including every spelling a resolver would
  read as one (``169.254.169.254``, ``2852039166``, ``0xa9.0xfe.0xa9.0xfe``,
  ``[::ffff:169.254.169.254]``, a trailing dot).
* DNS names are NOT resolved by default: registration stays fast and does not
  depend on DNS. When ``REGISTRY_ALLOWED_NETWORKS`` is set, an IP literal must lie
  inside one of the networks and a name is resolved once, at registration time,
  and every address it resolves to must lie inside them (a later DNS change is not
  re-checked: that is the allow-list's known limit).
"""

from __future__ import annotations

import ipaddress
import re
import socket
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")
# What inet_aton accepts: 1-4 dot-separated decimal, octal or hex numbers.
_INET_ATON_LIKE = re.compile(r"^(0[xX][0-9a-fA-F]*|[0-9]+)(\.(0[xX][0-9a-fA-F]*|[0-9]+)){0,3}$")

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address


def _show(host: str) -> str:
    return repr(host if len(host) <= 80 else host[:77] + "...")


def _literal_address(host: str) -> IPAddress | None:
    """The address a host string denotes by itself (without DNS), or None for a name."""
    bare = host.rstrip(".")
    try:
        return ipaddress.ip_address(bare)
    except ValueError:
        pass
    if _INET_ATON_LIKE.match(bare):
        try:
            return ipaddress.IPv4Address(socket.inet_aton(bare))
        except OSError as exc:
            raise ValidationError(f"Host {_show(host)} is not a valid IPv4 address.") from exc
    return None


def _is_link_local(addr: IPAddress) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return addr.is_link_local


def _in_allowed(addr: IPAddress, networks) -> bool:
    if isinstance(addr, ipaddress.IPv6Address) and addr.ipv4_mapped is not None:
        addr = addr.ipv4_mapped
    return any(addr.version == net.version and addr in net for net in networks)


def _resolve(host: str) -> list[IPAddress]:
    try:
        infos = socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)
    except (OSError, UnicodeError) as exc:
        raise ValidationError(f"Host {_show(host)} does not resolve ({exc}).") from exc
    return [ipaddress.ip_address(info[4][0].split("%")[0]) for info in infos]


def validate_service_url(value: str) -> str:
    """Raise ``ValidationError`` with a sentence naming the problem; return the URL unchanged."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError on a bad port
    except ValueError as exc:
        raise ValidationError(f"Not a valid URL: {exc}.") from exc
    if parts.scheme not in ("http", "https"):
        raise ValidationError("URL must start with http:// or https://.")
    if parts.username is not None or parts.password is not None:
        raise ValidationError("URL must not contain credentials (user:password@).")
    host = parts.hostname or ""
    if not host:
        raise ValidationError("URL must have a host.")
    if port == 0:
        raise ValidationError("URL port must be between 1 and 65535.")
    if "%" in host:  # an IPv6 zone id (fe80::1%eth0) or percent-encoding: both refused
        raise ValidationError(f"Host {_show(host)} must not contain '%'.")
    addr = _literal_address(host)
    if addr is None and not _HOST_NAME.match(host):
        raise ValidationError(f"Host {_show(host)} is not a valid host name.")
    if addr is not None and _is_link_local(addr):
        raise ValidationError(f"Host {_show(host)} is link-local ({addr}); link-local addresses are refused.")
    networks = settings.REGISTRY_ALLOWED_NETWORKS
    if networks:
        addresses = [addr] if addr is not None else _resolve(host.rstrip("."))
        for resolved in addresses:
            if _is_link_local(resolved):
                raise ValidationError(
                    f"Host {_show(host)} resolves to link-local {resolved}; link-local addresses are refused."
                )
            if not _in_allowed(resolved, networks):
                allowed = ", ".join(str(n) for n in networks)
                raise ValidationError(
                    f"Host {_show(host)} ({resolved}) is outside REGISTRY_ALLOWED_NETWORKS ({allowed})."
                )
    return value
