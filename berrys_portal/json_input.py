"""One rule for every JSON body the portal accepts: bounded nesting, storable strings.

Why here and not in serializers: a body nested 1,000 levels deep crashes
``json`` (RecursionError) or, a little shallower, whatever walks it next
(``copy.deepcopy`` in the adapters, the serializers, the JSON encoder), and
PostgreSQL's ``jsonb`` refuses ``\\u0000`` and lone surrogates (``\\ud800``)
at INSERT time. Both used to surface as 500s from wherever the body went. The
API's parser (``PortalJSONParser``) applies this rule before any view runs, so
the answer is always a 400 naming the offending place in the body.

Raw NUL bytes and raw (UTF-8-encoded) surrogates never get this far: the JSON
grammar forbids control characters in strings and the UTF-8 decoder refuses
surrogates. Only the escapes ``\\u0000`` and ``\\ud800``-``\\udfff`` can produce
them, so a body without those escapes and with fewer brackets than the depth
limit is accepted without walking it (the common case costs two C-level scans).
"""

from __future__ import annotations

import json
import re
from typing import Any

from django.conf import settings
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# The only escapes that decode to a NUL or a surrogate code point.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")

NUL_MESSAGE = "Must not contain NUL characters (\\u0000)."
SURROGATE_MESSAGE = "Must be valid Unicode: lone surrogates (\\ud800-\\udfff) are refused."


def json_depth_limit() -> int:
    return settings.API_MAX_JSON_DEPTH


def _label(path: tuple[Any, ...]) -> str:
    """``("input", "items", 2, "name")`` → ``input.items[2].name``; the body itself is ``body``."""
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            text = json.dumps(part)[1:-1]  # escapes NUL and surrogates so the name is printable
            out += f".{text}" if out else text
    return out or "body"


def _string_problem(value: str) -> str | None:
    match = _BAD_CHAR.search(value)
    if match is None:
        return None
    return NUL_MESSAGE if match.group() == "\x00" else SURROGATE_MESSAGE


def json_value_check(value: Any, *, max_depth: int | None = None, root: tuple[Any, ...] = ()) -> None:
    """Raise ``InvalidInput`` naming the place if ``value`` nests deeper than ``max_depth``
    (default ``API_MAX_JSON_DEPTH``) or holds a string (key or value) PostgreSQL cannot store.

    Iterative, so a hostile depth cannot exhaust the stack here.
    """
    limit = json_depth_limit() if max_depth is None else max_depth
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, root)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            problem = _string_problem(node)
            if problem:
                raise _invalid(path, problem)
            continue
        if not isinstance(node, dict | list):
            continue
        if depth >= limit:
            raise _invalid(path, f"Nested deeper than {limit} levels (API_MAX_JSON_DEPTH).")
        if isinstance(node, dict):
            for key, item in node.items():
                problem = _string_problem(key)
                if problem:
                    raise _invalid(path + (key,), f"Field name: {problem}")
                stack.append((item, depth + 1, path + (key,)))
        else:
            stack.extend((item, depth + 1, path + (index,)) for index, item in enumerate(node))


def _invalid(path: tuple[Any, ...], message: str) -> Exception:
    # Imported here: berrys_portal.errors imports DRF's views, which load this parser.
    from berrys_portal.errors import InvalidInput

    label = _label(path)
    return InvalidInput(f"Invalid input. {label}: {message}", errors={label: [message]})


def json_text_check(text: str, value: Any) -> None:
    """``json_value_check`` for a body parsed from ``text``, skipping the walk when the raw text
    shows it cannot fail (fewer opening brackets than the limit, no suspect escape)."""
    limit = json_depth_limit()
    shallow = text.count("[") + text.count("{") <= limit
    if shallow and _SUSPECT_ESCAPE.search(text) is None:
        return
    json_value_check(value, max_depth=limit)


def json_loads_checked(text: str | bytes) -> Any:
    """``json.loads`` plus the rule above; a body too deep for the decoder itself is a 400 too."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    try:
        value = json.loads(text)
    except RecursionError:
        raise _invalid((), f"Nested deeper than {json_depth_limit()} levels (API_MAX_JSON_DEPTH).") from None
    json_text_check(text, value)
    return value


class PortalJSONParser(JSONParser):
    """DRF's JSON parser with the portal's rule: depth limit, no NUL, no lone surrogates.

    The default parser of the API (``REST_FRAMEWORK["DEFAULT_PARSER_CLASSES"]``),
    so the registry, the workflow API and the gateway share it.
    """

    def parse(self, stream, media_type=None, parser_context=None):
        parser_context = parser_context or {}
        encoding = parser_context.get("encoding", settings.DEFAULT_CHARSET)
        try:
            text = stream.read().decode(encoding) if stream is not None else ""
        except UnicodeDecodeError as exc:
            raise ParseError(f"JSON parse error - body is not valid {encoding}: {exc}") from None
        try:
            value = json.loads(text, parse_constant=_refuse_constant)
        except RecursionError:
            raise _invalid((), f"Nested deeper than {json_depth_limit()} levels (API_MAX_JSON_DEPTH).") from None
        except ValueError as exc:
            raise ParseError(f"JSON parse error - {exc}") from None
        json_text_check(text, value)
        return value


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (DRF's STRICT_JSON does the same).
    raise ValueError(f"{name} is not valid JSON")
