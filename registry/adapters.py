"""Request adapters: rewrite a request body for its target service (model-mismatch fixes).

The integration guide's chat bug: the Web Dashboard sends ``status`` in
``POST /projects`` and the Project Coordinator answers 500. The fix is data, not
code: ``RequestAdapterRule`` rows (editable in the admin) say, per target service
type, method and endpoint pattern, which fields to drop, rename, default or map.
The ServiceClient calls ``adapt_request`` before every call.

Rules are read from the database at most every ``ADAPTER_CACHE_SECONDS`` per
process; saving or deleting a rule bumps a version in the shared cache, which
every process with a shared (Redis) cache checks at most every
``ADAPTER_VERSION_CHECK_SECONDS``: a change reaches all processes within that.
"""

from __future__ import annotations

import copy
import logging
import threading
import time
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db.models.signals import post_delete, post_save
from django.dispatch import receiver

from registry.models import RequestAdapterRule
from registry.patterns import PatternError, pattern_compile

logger = logging.getLogger(__name__)

VERSION_KEY = "registry:adapters:version"
_MISSING = object()


@dataclass(frozen=True)
class _CompiledRule:
    id: int
    service_type: str
    method: str
    regex: Any  # an RE2 pattern (registry.patterns)
    action: str
    path: tuple[str, ...]
    value: Any


class _RuleCache:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._rules: dict[str, list[_CompiledRule]] | None = None
        self._loaded_at = 0.0
        self._checked_at = 0.0
        self._version: Any = None

    def rules_for(self, service_type: str) -> list[_CompiledRule]:
        now = time.monotonic()
        with self._lock:
            if self._rules is not None and now - self._loaded_at < settings.ADAPTER_CACHE_SECONDS:
                # A cache round trip per call would cost more than the rules themselves:
                # ask for the shared version at most every ADAPTER_VERSION_CHECK_SECONDS.
                if now - self._checked_at < settings.ADAPTER_VERSION_CHECK_SECONDS:
                    return self._rules.get(service_type, [])
                self._checked_at = now
                version = _shared_version()
                if version == self._version:
                    return self._rules.get(service_type, [])
            else:
                version = _shared_version()
            self._rules = _load_rules()
            self._loaded_at = self._checked_at = time.monotonic()
            self._version = version
            return self._rules.get(service_type, [])

    def clear(self) -> None:
        with self._lock:
            self._rules = None


_cache = _RuleCache()


def _shared_version() -> Any:
    try:
        return cache.get(VERSION_KEY)
    except Exception:  # noqa: BLE001 - a cache outage falls back to the TTL alone
        return None


def _compile_pattern(rule: RequestAdapterRule) -> Any:
    # RE2, linear in the path: a pattern must never make matching a caller's path slow.
    return pattern_compile(rule.endpoint_pattern, glob=rule.pattern_type != RequestAdapterRule.PatternType.REGEX)


def _load_rules() -> dict[str, list[_CompiledRule]]:
    rules: dict[str, list[_CompiledRule]] = {}
    # Rules sharing a pattern share one compiled object, which adapt_request matches once per call.
    compiled: dict[tuple[str, str], Any] = {}
    for rule in RequestAdapterRule.objects.filter(enabled=True).order_by("service_type", "order", "id"):
        key = (rule.pattern_type, rule.endpoint_pattern)
        try:
            regex = compiled[key] if key in compiled else compiled.setdefault(key, _compile_pattern(rule))
        except PatternError:
            logger.error("adapter rule %s has an invalid pattern %r; skipped", rule.pk, rule.endpoint_pattern)
            continue
        rules.setdefault(rule.service_type, []).append(_CompiledRule(
            id=rule.pk, service_type=rule.service_type, method=rule.method, regex=regex,
            action=rule.action, path=tuple(rule.field.split(".")), value=rule.value,
        ))
    return rules


def adapter_cache_clear() -> None:
    """Forget the cached rules here and tell other processes to reload theirs."""
    _cache.clear()
    try:
        cache.set(VERSION_KEY, time.time_ns(), timeout=None)
    except Exception:  # noqa: BLE001 - other processes still reload within the TTL
        logger.warning("could not publish the adapter rules version; other processes reload within the TTL")


@receiver([post_save, post_delete], sender=RequestAdapterRule)
def _rules_changed(**kwargs) -> None:
    adapter_cache_clear()


def _parent(body: dict[str, Any], path: tuple[str, ...], *, create: bool) -> dict[str, Any] | None:
    node: Any = body
    for part in path[:-1]:
        child = node.get(part, _MISSING)
        if child is _MISSING and create:
            child = node[part] = {}
        if not isinstance(child, dict):
            return None
        node = child
    return node


def _apply(rule: _CompiledRule, body: dict[str, Any]) -> bool:
    """Apply one rule to ``body`` in place; True if it changed something."""
    leaf = rule.path[-1]
    if rule.action == RequestAdapterRule.Action.DEFAULT:
        parent = _parent(body, rule.path, create=True)
        if parent is None or leaf in parent:
            return False
        parent[leaf] = copy.deepcopy(rule.value)
        return True
    parent = _parent(body, rule.path, create=False)
    if parent is None or leaf not in parent:
        return False
    if rule.action == RequestAdapterRule.Action.DROP:
        del parent[leaf]
        return True
    if rule.action == RequestAdapterRule.Action.RENAME:
        value = parent.pop(leaf)
        target_path = tuple(str(rule.value).split("."))
        target = _parent(body, target_path, create=True)
        if target is None:
            parent[leaf] = value  # the new location is not an object: leave the body as it was
            return False
        target[target_path[-1]] = value
        return True
    if rule.action == RequestAdapterRule.Action.MAP:
        mapping = rule.value if isinstance(rule.value, dict) else {}
        current = parent[leaf]
        key = current if isinstance(current, str) else str(current)
        if key in mapping:
            parent[leaf] = copy.deepcopy(mapping[key])
            return True
    return False


def adapt_request(*, service_type: str, method: str, endpoint: str, data: Any) -> Any:
    """Return the body to send to ``service_type``: ``data`` rewritten by the matching rules.

    Only JSON objects are rewritten; the caller's object is never modified (a
    changed body is a deep copy).
    """
    if not isinstance(data, dict):
        return data
    rules = _cache.rules_for(service_type)
    if not rules:
        return data
    path = endpoint.split("?", 1)[0]
    if not path.startswith("/"):
        path = "/" + path
    method = method.upper()
    body = None
    applied = []
    matched: dict[int, bool] = {}  # per compiled pattern: RE2's wrapper costs ~6 µs a match
    for rule in rules:
        if rule.method not in ("*", method):
            continue
        hit = matched.get(id(rule.regex))
        if hit is None:
            hit = matched[id(rule.regex)] = bool(rule.regex.fullmatch(path))
        if not hit:
            continue
        if body is None:
            body = copy.deepcopy(data)
        if _apply(rule, body):
            applied.append(rule.id)
    if applied:
        logger.debug("adapted %s %s for %s with rule(s) %s", method, path, service_type, applied)
    return body if body is not None else data
