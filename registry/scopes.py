"""API-key scopes: the names, the old names they replace, and what each one implies.

| scope              | allows                                                        |
|--------------------|---------------------------------------------------------------|
| registry:read      | list and read services, discovery, workflow definitions       |
| registry:write     | register services; change, heartbeat, deregister its own      |
| registry:admin     | registry:write on every service                               |
| runs:read          | list and read the runs this key started                       |
| runs:read:all      | list and read every run                                       |
| workflows          | start runs; retry, cancel, answer its own (implies runs:read) |
| workflows:operate  | act on every run (implies workflows and runs:read:all)        |
| gateway            | gateway calls, limited by the key's ``gateway_allow`` list    |
| metrics            | /metrics and /registry/prometheus-sd only                     |

The old scopes stay accepted (with a deprecation warning) wherever a key is
created, and a key row still holding one keeps working: ``read`` →
registry:read + metrics, ``register`` → registry:write, ``workflows`` and
``gateway`` keep their names. ``read`` deliberately no longer reads runs.
"""

from __future__ import annotations

import fnmatch
import logging
from functools import lru_cache

from registry.models import ApiKey

logger = logging.getLogger(__name__)

Scope = ApiKey.Scope
SCOPES: frozenset[str] = frozenset(Scope.values)

# Old name -> the nearest new scopes (the data migration 0006 applies the same map).
ALIASES: dict[str, tuple[str, ...]] = {
    "read": (Scope.REGISTRY_READ, Scope.METRICS),
    "register": (Scope.REGISTRY_WRITE,),
}
DEPRECATED_NAMES = frozenset({"read", "register"})  # "workflows" and "gateway" kept their names

IMPLIES: dict[str, tuple[str, ...]] = {
    Scope.REGISTRY_ADMIN: (Scope.REGISTRY_WRITE,),
    Scope.RUNS_READ_ALL: (Scope.RUNS_READ,),
    Scope.WORKFLOWS: (Scope.RUNS_READ,),
    Scope.WORKFLOWS_OPERATE: (Scope.WORKFLOWS, Scope.RUNS_READ_ALL),
}

GATEWAY_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def scopes_normalize(scopes: list[str] | tuple[str, ...], *, where: str = "") -> list[str]:
    """Old names replaced by new ones (warning once per call), unknown names refused (ValueError)."""
    out: set[str] = set()
    unknown = []
    old = []
    for scope in scopes:
        scope = scope.strip()
        if scope in ALIASES:
            out.update(ALIASES[scope])
            old.append(scope)
        elif scope in SCOPES:
            out.add(scope)
        else:
            unknown.append(scope)
    if unknown:
        raise ValueError(
            f"Unknown scope(s): {', '.join(sorted(unknown))}. Valid: {', '.join(sorted(SCOPES))} "
            f"(old names {', '.join(sorted(ALIASES))} are still accepted)."
        )
    if old:
        logger.warning(
            "deprecated scope name(s) %s%s: use %s", ", ".join(old), f" ({where})" if where else "",
            ", ".join(f"{name} -> {'+'.join(ALIASES[name])}" for name in old),
        )
    return sorted(out)


@lru_cache(maxsize=256)
def scopes_effective(scopes: tuple[str, ...]) -> frozenset[str]:
    """The stored scopes with aliases resolved and implications followed."""
    todo = []
    for scope in scopes:
        todo.extend(ALIASES.get(scope, (scope,)))
    seen: set[str] = set()
    while todo:
        scope = todo.pop()
        if scope not in seen:
            seen.add(scope)
            todo.extend(IMPLIES.get(scope, ()))
    return frozenset(seen)


def key_has_scope(key: ApiKey, scope: str) -> bool:
    return scope in scopes_effective(tuple(key.scopes))


def gateway_allow_normalize(entries: list[str]) -> list[str]:
    """``TYPE:METHOD`` entries (``*`` for any), upper-cased; ValueError naming a bad one."""
    from registry.types import TYPE_PATTERN

    out = set()
    for raw in entries:
        entry = raw.strip().upper()
        service_type, sep, method = entry.partition(":")
        method = method or "*"
        if not (service_type == "*" or TYPE_PATTERN.match(service_type)) or (
            method != "*" and method not in GATEWAY_METHODS
        ) or (sep and not method):
            raise ValueError(
                f"Gateway allow-list entry {raw!r}: use TYPE:METHOD, e.g. AGENT_ORCHESTRATOR:POST "
                f"(TYPE or METHOD may be *; methods: {', '.join(GATEWAY_METHODS)})."
            )
        out.add(f"{service_type}:{method}")
    return sorted(out)


def gateway_allows(key: ApiKey, *, service_type: str, method: str) -> bool:
    for entry in key.gateway_allow or ():
        allowed_type, _, allowed_method = entry.partition(":")
        if allowed_type in ("*", service_type) and allowed_method in ("*", method):
            return True
    return False


def key_may_register(key: ApiKey, *, service_type: str, name: str) -> str | None:
    """None if the key's type and name limits allow this registration, else why not."""
    if key.service_types and service_type not in key.service_types:
        return (f"This API key may register only services of type {', '.join(key.service_types)}, "
                f"not {service_type}.")
    if key.name_patterns and not any(fnmatch.fnmatchcase(name, p) for p in key.name_patterns):
        return (f"This API key may register only names matching {', '.join(key.name_patterns)}, "
                f"not {name!r}.")
    return None


def check_scope_settings(app_configs=None, **kwargs) -> list:
    """System check: API_KEY_ADMIN_MINTABLE_SCOPES names real scopes (a typo would silently mint nothing)."""
    from django.conf import settings
    from django.core.checks import Error

    unknown = sorted(set(settings.API_KEY_ADMIN_MINTABLE_SCOPES) - SCOPES)
    if unknown:
        return [Error(f"API_KEY_ADMIN_MINTABLE_SCOPES names unknown scope(s): {', '.join(unknown)}",
                      hint=f"Valid: {', '.join(sorted(SCOPES))}", id="registry.E101")]
    return []
