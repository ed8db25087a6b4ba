"""The registry of workflow definitions: ``register``, ``get``, ``all``, ``unregister``.

Definition modules placed in the ``workflows.definitions`` package are imported the
first time the registry is read (``autodiscover``), so a new workflow only needs a
module there that calls ``register(Workflow(...))`` at import time. Modules named in
the ``WORKFLOW_DEFINITION_MODULES`` setting (env var, comma-separated) are imported
too: the test suite uses it to give its Celery workers test-only definitions.
"""

from __future__ import annotations

import importlib
import pkgutil
import threading

from workflows.definitions.base import DefinitionError, Workflow

_lock = threading.RLock()
_registry: dict[tuple[str, int], Workflow] = {}
_discovered = False
# Package modules that hold the framework itself, not definitions.
_FRAMEWORK_MODULES = {"base", "registry"}


class UnknownWorkflow(LookupError):
    """No registered workflow has this name (or this version)."""


def register(workflow: Workflow, *, replace: bool = False) -> Workflow:
    """Add a definition. Registering the same name and version twice is an error unless ``replace``."""
    if not isinstance(workflow, Workflow):
        raise DefinitionError(f"register() expects a Workflow, got {type(workflow).__name__}")
    key = (workflow.name, workflow.version)
    with _lock:
        if key in _registry and not replace and _registry[key] is not workflow:
            raise DefinitionError(f"Workflow {workflow.name!r} version {workflow.version} is already registered")
        _registry[key] = workflow
    return workflow


def unregister(name: str, version: int | None = None) -> None:
    """Remove one version (or every version) of a workflow; used by tests."""
    with _lock:
        for key in [k for k in _registry if k[0] == name and (version is None or k[1] == version)]:
            del _registry[key]


def autodiscover() -> None:
    """Import every definition module in this package once."""
    global _discovered
    if _discovered:
        return
    with _lock:
        if _discovered:
            return
        package = importlib.import_module("workflows.definitions")
        for info in pkgutil.iter_modules(package.__path__):
            if info.name.startswith("_") or info.name in _FRAMEWORK_MODULES:
                continue
            importlib.import_module(f"workflows.definitions.{info.name}")
        from django.conf import settings

        for module in getattr(settings, "WORKFLOW_DEFINITION_MODULES", []):
            importlib.import_module(module)
        _discovered = True


def get(name: str, version: int | None = None) -> Workflow:
    """The definition ``name`` at ``version`` (default: the highest registered version)."""
    autodiscover()
    with _lock:
        if version is not None:
            try:
                return _registry[(name, version)]
            except KeyError:
                raise UnknownWorkflow(f"Unknown workflow {name!r} version {version}") from None
        versions = [v for (n, v) in _registry if n == name]
        if not versions:
            known = ", ".join(sorted({n for n, _ in _registry})) or "none"
            raise UnknownWorkflow(f"Unknown workflow {name!r}. Known workflows: {known}")
        return _registry[(name, max(versions))]


def all() -> list[Workflow]:  # noqa: A001 - the brief's name; module-qualified at call sites
    """The latest version of every registered workflow, by name."""
    autodiscover()
    with _lock:
        latest: dict[str, Workflow] = {}
        for (name, version), wf in _registry.items():
            if name not in latest or version > latest[name].version:
                latest[name] = wf
        return [latest[n] for n in sorted(latest)]


def all_versions() -> list[Workflow]:
    autodiscover()
    with _lock:
        return [_registry[k] for k in sorted(_registry)]
