"""A registration body checked in plain Python: the common case without DRF's serializer.

Building and running ``ServiceRegisterSerializer`` costs a registration ~1 ms of CPU
(DRF deep-copies its declared fields on every instantiation, then walks them), more than
the rest of an unchanged re-registration put together. ``register_data_fast`` accepts
the body a service usually sends — the known fields, each of the plain JSON type the
serializer expects and within its bounds — and returns exactly the ``validated_data`` the
serializer would. Anything else (a missing or unknown field, a string where a number is
expected, surrounding whitespace, a value out of bounds, a URL the policy refuses) returns
``None`` and the caller runs the serializer, which then gives its 400 naming the field.
So the API's answers are the serializer's, and this module only decides *when it may be
skipped*; ``tests/registry/test_register_input.py`` checks that both agree on every body
it accepts.
"""

from __future__ import annotations

import json
import math
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError as DjangoValidationError
from rest_framework import serializers

from berrys_portal.json_input import json_string_problem
from registry.models import Criticality
from registry.serializers import (
    HTTP_METHODS,
    INT_MAX,
    MAX_ENDPOINTS,
    MAX_LIST_ITEMS,
    MAX_METADATA_BYTES,
    MAX_STRING_ITEM,
    ServiceRegisterSerializer,
    _check_json_value,
    _unique,
)
from registry.validators import validate_service_url


def _regex(field: serializers.Field):
    """The pattern a RegexField checks (the serializer's own, so the two cannot drift)."""
    return next(v.regex for v in field.validators if hasattr(v, "regex"))


_DECLARED = ServiceRegisterSerializer._declared_fields
_FIELDS = frozenset(_DECLARED)
_NAME_RE = _regex(_DECLARED["name"])
_TYPE_RE = _regex(_DECLARED["type"])
_PATH_RE = _regex(_DECLARED["endpoints"].child._declared_fields["path"])
_CRITICALITY = frozenset(Criticality.values)
_METHODS = frozenset(HTTP_METHODS)
# name -> (minimum, maximum, null allowed)
_INTS = {
    "check_interval_seconds": (1, 86_400, False),
    "slow_threshold_ms": (1, INT_MAX, True),
    "failures_before_critical": (1, 1000, False),
    "successes_before_passing": (1, 1000, False),
    "ttl_seconds": (1, INT_MAX, True),
    "deregister_after_seconds": (1, INT_MAX, True),
}


class _Defer(Exception):
    """Not the common case: let the serializer decide."""


def _text(value: Any, *, max_length: int, blank: bool = False) -> str:
    # DRF's CharField trims whitespace and refuses NUL / surrogates: only text it would keep
    # unchanged passes here.
    if type(value) is not str or len(value) > max_length or value != value.strip():
        raise _Defer
    if (not value and not blank) or json_string_problem(value):
        raise _Defer
    return value


def _url(value: Any, *, blank: bool = False) -> str:
    value = _text(value, max_length=2000, blank=blank)
    if value:
        try:
            validate_service_url(value)
        except DjangoValidationError:
            raise _Defer from None
    return value


def _strings(value: Any) -> list[str]:
    if type(value) is not list or len(value) > MAX_LIST_ITEMS:
        raise _Defer
    return _unique([_text(item, max_length=MAX_STRING_ITEM) for item in value])


def _endpoints(value: Any) -> list[dict[str, str]]:
    if type(value) is not list or len(value) > MAX_ENDPOINTS:
        raise _Defer
    out = []
    for item in value:
        if type(item) is not dict or item.keys() != {"method", "path"}:
            raise _Defer
        if type(item["method"]) is not str or item["method"] not in _METHODS:
            raise _Defer
        path = _text(item["path"], max_length=500)
        if not _PATH_RE.search(path):
            raise _Defer
        out.append({"method": item["method"], "path": path})
    return out


def _metadata(value: Any) -> dict:
    if type(value) is not dict:
        raise _Defer
    try:
        _check_json_value(value)
    except serializers.ValidationError:
        raise _Defer from None
    if len(json.dumps(value, ensure_ascii=False).encode("utf-8")) > MAX_METADATA_BYTES:
        raise _Defer
    return dict(value)


def _integer(name: str, value: Any) -> int | None:
    low, high, nullable = _INTS[name]
    if value is None and nullable:
        return None
    if type(value) is not int or not low <= value <= high:
        raise _Defer
    if name == "check_interval_seconds" and value < settings.HEALTH_MIN_INTERVAL_SECONDS:
        raise _Defer
    return value


def _timeout(value: Any) -> float:
    if type(value) not in (int, float):
        raise _Defer
    value = float(value)
    if not math.isfinite(value) or not 0.1 <= value <= 300 or value > settings.HEALTH_MAX_TIMEOUT_SECONDS:
        raise _Defer
    return value


def register_data_fast(data: Any) -> dict[str, Any] | None:
    """``ServiceRegisterSerializer``'s ``validated_data`` for a common, valid body; else None."""
    if type(data) is not dict or not data.keys() <= _FIELDS:
        return None
    try:
        name = _text(data["name"], max_length=200)
        service_type = _text(data["type"], max_length=64)
        if not _NAME_RE.search(name) or not _TYPE_RE.search(service_type):
            return None
        out: dict[str, Any] = {"name": name, "type": service_type, "url": _url(data["url"])}
        for field, value in data.items():
            if field in out:
                continue
            if field == "health_url":
                out[field] = _url(value, blank=True)
            elif field == "metadata":
                out[field] = _metadata(value)
            elif field in ("capabilities", "tags"):
                out[field] = _strings(value)
            elif field == "endpoints":
                out[field] = _endpoints(value)
            elif field == "criticality":
                if type(value) is not str or value not in _CRITICALITY:
                    return None
                out[field] = value
            elif field == "check_timeout_seconds":
                out[field] = _timeout(value)
            else:
                out[field] = _integer(field, value)
    except (_Defer, KeyError):
        return None
    return out
