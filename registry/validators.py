"""Checks on where a registered service may point the portal (its url and health_url).

The portal sends requests to whatever a service registers, so a registration is
a way to make the portal call an address of the caller's choosing (SSRF). The
rules are the egress policy's (``registry.egress``), applied at registration so
a bad URL is a 400 naming the problem rather than a probe that fails later:

* http or https only, with a host; no credentials in the URL.
* An IP literal, in every spelling a resolver would read (``127.1``,
  ``2852039166``, ``0xa9.0xfe.0xa9.0xfe``, ``[::ffff:169.254.169.254]``,
  ``[64:ff9b::a9fe:a9fe]``, a trailing dot), is checked against the policy.
* Well-known cloud metadata names (``metadata.google.internal``, …) are refused.
* A name is resolved now; every address it resolves to is checked. A name that
  does not resolve is refused when ``REGISTRY_ALLOWED_NETWORKS`` is set and
  accepted otherwise (development: it may come up later).

Registration is only the first check: the policy runs again on every connection
(a name may resolve elsewhere later — DNS rebinding).

A URL whose host is an IP literal needs no DNS, so its verdict is a function of the URL
and the policy's settings alone: an accepted one is remembered per process under those
settings (a service re-registering every few seconds re-checks nothing). Names are
checked every time: what they resolve to may change.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from django.conf import settings
from django.core.exceptions import ValidationError

from registry import egress

_HOST_NAME = re.compile(r"^[A-Za-z0-9_]([A-Za-z0-9_-]{0,62})(\.[A-Za-z0-9_]([A-Za-z0-9_-]{0,62}))*\.?$")


def _show(host: str) -> str:
    return repr(host if len(host) <= 80 else host[:77] + "...")


# (url, policy settings) of accepted URLs whose host is an IP literal.
_accepted_literals: set[tuple] = set()
_ACCEPTED_MAX = 10_000


def _policy() -> tuple:
    return (tuple(settings.REGISTRY_ALLOWED_NETWORKS), settings.EGRESS_ALLOW_LOOPBACK,
            settings.EGRESS_ALLOW_SELF, settings.PORTAL_PORT)


def validate_service_url(value: str) -> str:
    """Raise ``ValidationError`` with a sentence naming the problem; return the URL unchanged."""
    remembered = (value, _policy())
    if remembered in _accepted_literals:
        return value
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
    try:
        addr = egress.literal_address(host)
    except ValueError as exc:
        raise ValidationError(f"Host {_show(host)} is not a valid address: {exc}.") from exc
    if addr is None and not _HOST_NAME.match(host):
        raise ValidationError(f"Host {_show(host)} is not a valid host name.")
    default_port = 443 if parts.scheme == "https" else 80
    try:
        egress.host_resolve(host, port or default_port)
    except egress.EgressDenied as exc:
        raise ValidationError(f"Host {_show(host)} is refused: {exc}.") from exc
    except egress.EgressLookupError as exc:
        if settings.REGISTRY_ALLOWED_NETWORKS:
            raise ValidationError(f"Host {_show(host)} does not resolve ({exc}).") from exc
    if addr is not None:
        if len(_accepted_literals) >= _ACCEPTED_MAX:  # crude bound: a registry has few addresses
            _accepted_literals.clear()
        _accepted_literals.add(remembered)
    return value
