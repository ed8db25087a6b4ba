"""The building blocks of a workflow definition: ``Workflow``, ``Step``, ``RetryPolicy``, ``HumanSpec``.

See ``workflows.definitions`` (the package docstring) for the full guide and an example.
Everything here is immutable and free of I/O: the engine (``workflows.engine``) does the
calling, persisting and retrying; a definition only says *what* to do.
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

from registry.paths import PathValueError, path_segment, query_value
from registry.types import TYPE_PATTERN

#: The run's context: the run input, then each finished step's output merged in order.
Context = Mapping[str, Any]
#: A step's output: a dict merged into the context (``None`` means "nothing to add").
Output = dict[str, Any] | None

StepKind = Literal["http", "local", "human"]
TimeoutOutcome = Literal["fail", "skip", "continue"]

HTTP_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE"})
# Client errors that a retry cannot fix (408 Request Timeout, 425 Too Early and
# 429 Too Many Requests are transient and stay retryable).
CLIENT_ERROR_STATUSES = frozenset(set(range(400, 500)) - {408, 425, 429})
# RFC 9110 token characters.
_HEADER_NAME = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class DefinitionError(ValueError):
    """A workflow definition is malformed (raised when it is built or registered)."""


@dataclass(frozen=True)
class RetryPolicy:
    """How a failing step attempt is retried. Delays are in seconds.

    The delay after attempt ``n`` (1-based) fails is
    ``min(initial_delay * backoff ** (n - 1), max_delay)``.
    ``non_retryable`` lists exception classes (e.g. ``ServiceResponseError``) and/or
    HTTP status codes (e.g. ``409``) that end the step at once. HTTP 4xx answers other
    than 408/425/429 are never retried unless ``retry_client_errors`` is true.
    """

    max_attempts: int = 3
    initial_delay: float = 1.0
    backoff: float = 2.0
    max_delay: float = 60.0
    non_retryable: tuple[type[BaseException] | int, ...] = ()
    retry_client_errors: bool = False

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise DefinitionError("RetryPolicy.max_attempts must be at least 1")
        if self.initial_delay < 0 or self.max_delay < 0:
            raise DefinitionError("RetryPolicy delays must not be negative")
        if self.backoff < 1:
            raise DefinitionError("RetryPolicy.backoff must be at least 1")

    def delay_after(self, attempt_number: int) -> float:
        """Seconds to wait after attempt ``attempt_number`` (1-based) failed."""
        return min(self.initial_delay * self.backoff ** max(attempt_number - 1, 0), self.max_delay)

    def is_retryable(self, exc: BaseException, status: int | None = None) -> bool:
        """Whether ``exc`` (with the HTTP ``status`` it carried, if any) may be retried."""
        for item in self.non_retryable:
            if isinstance(item, int):
                if status == item:
                    return False
            elif isinstance(exc, item):
                return False
        if status in CLIENT_ERROR_STATUSES and not self.retry_client_errors:
            return False
        return True


NO_RETRY = RetryPolicy(max_attempts=1)


@dataclass(frozen=True)
class HumanSpec:
    """A step that waits for a person (an operator in the admin, or a caller POSTing a signal).

    ``timeout`` (seconds, ``None`` = wait forever) is checked by the reconciler; when it
    passes, ``on_timeout`` decides: ``"fail"`` fails the run, ``"skip"`` skips the step,
    ``"continue"`` continues with ``default_answer`` as if someone had answered it.
    """

    prompt: str
    timeout: float | None = None
    on_timeout: TimeoutOutcome = "fail"
    default_answer: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_timeout not in ("fail", "skip", "continue"):
            raise DefinitionError("HumanSpec.on_timeout must be 'fail', 'skip' or 'continue'")
        if self.timeout is not None and self.timeout <= 0:
            raise DefinitionError("HumanSpec.timeout must be positive (or None)")


def _default_read_response(step_name: str) -> Callable[[Context, Any], Output]:
    def read(ctx: Context, body: Any) -> Output:
        return {step_name: body}

    return read


def _fill(template: str, ctx: Context, encode: Callable[[Any], str]) -> str:
    formatter = string.Formatter()
    out: list[str] = []
    for literal, field_name, spec, conversion in formatter.parse(template):
        out.append(literal)
        if field_name is not None:
            value, _ = formatter.get_field(field_name, (), ctx)
            value = formatter.convert_field(value, conversion)
            out.append(encode(formatter.format_field(value, spec or "")))
    return "".join(out)


@dataclass(frozen=True)
class Step:
    """One step of a workflow. See the package docstring for the meaning of each field."""

    name: str
    kind: StepKind = "http"
    # --- http steps ---
    service_type: str | None = None
    method: str = "POST"
    path: str = ""
    build_request: Callable[[Context], Any] | None = None
    read_response: Callable[[Context, Any], Output] | None = None
    timeout: float | None = None
    # The header carrying the step's idempotency key on every call (None: send none).
    idempotency_header: str | None = "Idempotency-Key"
    # False for a service known not to honour the key: the step is then "at least once".
    service_dedupes: bool = True
    # --- every kind ---
    required: bool = True
    fallback: Callable[[Context], Output] | None = None
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    description: str = ""
    # --- local steps ---
    local: Callable[[Context], Output] | None = None
    # --- human steps ---
    human: HumanSpec | None = None
    # --- local steps: service types the code consults (declared for readiness) ---
    uses: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        where = f"Step {self.name!r}"
        if not self.name or not self.name.replace("_", "").replace("-", "").isalnum():
            raise DefinitionError(f"{where}: name must be letters, digits, '_' or '-'")
        if self.kind == "http":
            if not self.service_type or not TYPE_PATTERN.match(self.service_type):
                raise DefinitionError(f"{where}: an http step needs service_type in UPPER_SNAKE_CASE")
            if self.method.upper() not in HTTP_METHODS:
                raise DefinitionError(f"{where}: method must be one of {sorted(HTTP_METHODS)}")
            if not self.path.startswith("/"):
                raise DefinitionError(f"{where}: path must start with '/'")
            object.__setattr__(self, "method", self.method.upper())
        elif self.kind == "local":
            if self.local is None:
                raise DefinitionError(f"{where}: a local step needs local=callable(ctx)")
        elif self.kind == "human":
            if self.human is None:
                raise DefinitionError(f"{where}: a human step needs human=HumanSpec(...)")
        else:
            raise DefinitionError(f"{where}: kind must be 'http', 'local' or 'human'")
        if self.timeout is not None and self.timeout <= 0:
            raise DefinitionError(f"{where}: timeout must be positive")
        if self.idempotency_header is not None and not _HEADER_NAME.match(self.idempotency_header):
            raise DefinitionError(f"{where}: idempotency_header must be an HTTP header name (or None)")

    @property
    def delivery(self) -> str:
        """``"exactly once"`` when the service dedupes on the step's key, else ``"at least once"``.

        A worker lost mid-call means the call is sent again; only a service that honours
        the key turns that repeat into the first answer. Empty for local and human steps.
        """
        if self.kind != "http":
            return ""
        return "exactly once" if self.idempotency_header and self.service_dedupes else "at least once"

    @property
    def path_fields(self) -> list[str]:
        """Context keys the path template needs, e.g. ``["project_id"]``."""
        return [f for _, f, _, _ in string.Formatter().parse(self.path) if f]

    def render_path(self, ctx: Context) -> str:
        """The path with ``{placeholders}`` filled from the context.

        Context values come from run input, i.e. from callers: each is percent-encoded
        as one path segment (or one query value after ``?``), so a value cannot add
        segments, a query or a fragment; ``.``, ``..`` and empty values are refused
        (``PathValueError``). See registry/paths.py.
        """
        missing = [f for f in self.path_fields if f not in ctx]
        if missing:
            raise KeyError(f"path {self.path!r} needs {', '.join(missing)} in the context")
        base, question, query = self.path.partition("?")
        rendered = _fill(base, ctx, path_segment)
        if any(seg in (".", "..") for seg in rendered.split("/")):
            raise PathValueError(f"path {self.path!r} rendered to {rendered!r}: a '.' or '..' segment")
        return rendered + question + _fill(query, ctx, query_value)

    def request_body(self, ctx: Context) -> Any:
        """The request body: ``build_request(ctx)``, or nothing."""
        return self.build_request(ctx) if self.build_request else None

    def output_from_response(self, ctx: Context, body: Any) -> dict[str, Any]:
        reader = self.read_response or _default_read_response(self.name)
        return dict(reader(ctx, body) or {})

    def output_from_answer(self, ctx: Context, answer: dict[str, Any]) -> dict[str, Any]:
        """A human step's output: ``read_response(ctx, answer)`` or ``{name: answer}``."""
        return self.output_from_response(ctx, answer)


@dataclass(frozen=True)
class Workflow:
    """A named, versioned, ordered list of steps.

    ``required_inputs`` are keys that must be in a run's input (a missing one is a 400
    naming it). A run pins ``(name, version)``: bump ``version`` when steps change in a
    way that would confuse runs already in flight, and keep the old version registered
    until they finish.
    """

    name: str
    version: int
    steps: tuple[Step, ...]
    description: str = ""
    required_inputs: tuple[str, ...] = ()
    # Readiness (workflows/readiness.py): the service types the workflow needs (``requires``)
    # and can do without (``optional``), as in the guide's dependency table; ``callers`` are
    # the ones among them that start it rather than being called by a step (the Web
    # Dashboard). Checked against the steps below, so table and steps cannot drift apart.
    # ``when_blocked``: "start" (runs start and wait for the service, the default) or
    # "refuse" (POST /workflows/runs answers 409 naming the missing service).
    requires: tuple[str, ...] = ()
    optional: tuple[str, ...] = ()
    callers: tuple[str, ...] = ()
    when_blocked: str = "start"

    def __post_init__(self) -> None:
        object.__setattr__(self, "steps", tuple(self.steps))
        object.__setattr__(self, "required_inputs", tuple(self.required_inputs))
        for name in ("requires", "optional", "callers"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if not self.name or not self.name.replace("_", "").isalnum() or not self.name.islower():
            raise DefinitionError(f"Workflow name {self.name!r}: use lower_snake_case")
        if self.version < 1:
            raise DefinitionError(f"Workflow {self.name!r}: version must be >= 1")
        if not self.steps:
            raise DefinitionError(f"Workflow {self.name!r} has no steps")
        names = [s.name for s in self.steps]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise DefinitionError(f"Workflow {self.name!r}: duplicate step names {dupes}")
        self._check_dependencies()

    def _check_dependencies(self) -> None:
        """The declared dependency table agrees with the steps (only when one is declared)."""
        where = f"Workflow {self.name!r}"
        if self.when_blocked not in ("start", "refuse"):
            raise DefinitionError(f"{where}: when_blocked must be 'start' or 'refuse'")
        if not (self.requires or self.optional or self.callers):
            return
        declared = set(self.requires) | set(self.optional)
        if set(self.requires) & set(self.optional):
            raise DefinitionError(f"{where}: {sorted(set(self.requires) & set(self.optional))} "
                                  "both required and optional")
        used = {s.service_type for s in self.steps if s.service_type} | {t for s in self.steps for t in s.uses}
        hard = {s.service_type for s in self.steps if s.service_type and s.required and s.fallback is None}
        problems = []
        if hard - set(self.requires):
            problems.append(f"steps that fail the run without {sorted(hard - set(self.requires))} "
                            "but they are not in requires")
        if used - declared:
            problems.append(f"steps use {sorted(used - declared)}, not declared in requires or optional")
        if declared - used - set(self.callers):
            problems.append(f"{sorted(declared - used - set(self.callers))} declared but no step uses "
                            "them (a caller? list it in callers)")
        if set(self.callers) - declared:
            problems.append(f"callers {sorted(set(self.callers) - declared)} not in requires or optional")
        if problems:
            raise DefinitionError(f"{where}: dependency table and steps disagree: " + "; ".join(problems))

    def dependencies(self) -> tuple[list[str], list[str]]:
        """(required, optional) service types: the declared table, else what the steps imply."""
        if self.requires or self.optional or self.callers:
            return sorted(self.requires), sorted(self.optional)
        return self.required_services, self.optional_services

    def step(self, name: str) -> Step:
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(f"Workflow {self.name!r} has no step {name!r}")

    def step_index(self, name: str) -> int:
        for i, s in enumerate(self.steps):
            if s.name == name:
                return i
        raise KeyError(f"Workflow {self.name!r} has no step {name!r}")

    @property
    def required_services(self) -> list[str]:
        return sorted({s.service_type for s in self.steps if s.service_type and s.required})

    @property
    def optional_services(self) -> list[str]:
        req = set(self.required_services)
        return sorted({s.service_type for s in self.steps if s.service_type and not s.required} - req)

    def missing_inputs(self, data: Mapping[str, Any]) -> list[str]:
        return [k for k in self.required_inputs if k not in data]

    def describe(self) -> dict[str, Any]:
        """A JSON-able description (used by ``GET /workflows/definitions``)."""
        return {
            "name": self.name,
            "version": self.version,
            "description": self.description,
            "required_inputs": list(self.required_inputs),
            "required_services": self.required_services,
            "optional_services": self.optional_services,
            "steps": [
                {
                    "name": s.name,
                    "kind": s.kind,
                    "service_type": s.service_type,
                    "method": s.method if s.kind == "http" else None,
                    "path": s.path if s.kind == "http" else None,
                    "required": s.required,
                    "has_fallback": s.fallback is not None,
                    "max_attempts": s.retry.max_attempts,
                    "timeout": s.timeout,
                    "idempotency_header": s.idempotency_header if s.kind == "http" else None,
                    "delivery": s.delivery,
                    "description": s.description or (s.human.prompt if s.human else ""),
                }
                for s in self.steps
            ],
        }
