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
them, so strings are only walked when such an escape appears. Depth is decided
from the text before decoding (``_too_deep``), so the decoder never recurses
past the limit; both checks are C-level regex passes in the common case.
"""

from __future__ import annotations

import json
import math
import re
from typing import Any

from django import forms
from django.conf import settings
from django.core.exceptions import ValidationError
from django.forms.fields import InvalidJSONInput
from rest_framework.exceptions import ParseError
from rest_framework.parsers import JSONParser

# The only escapes that decode to a NUL or a surrogate code point.
_SUSPECT_ESCAPE = re.compile(r"\\u(?:0000|[dD][89a-fA-F])")
_BAD_CHAR = re.compile("[\x00\ud800-\udfff]")
_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_LEAF_PAIR = re.compile(r"\[\]|\{\}")
# Every escape in order: in the JSON text "\\u0000" the escaped backslash is one escape, no NUL.
_ESCAPE = re.compile(r"\\(?:u([0-9a-fA-F]{4})|.)", re.DOTALL)

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


def json_string_problem(value: str) -> str | None:
    match = _BAD_CHAR.search(value)
    if match is None:
        return None
    return NUL_MESSAGE if match.group() == "\x00" else SURROGATE_MESSAGE


def json_value_check(value: Any, *, max_depth: int | None = None, root: tuple[Any, ...] = ()) -> None:
    """Raise ``InvalidInput`` naming the place if ``value`` nests deeper than ``max_depth``
    (default ``API_MAX_JSON_DEPTH``) or holds a string (key or value) or a number (NaN,
    infinities) PostgreSQL cannot store.

    Iterative, so a hostile depth cannot exhaust the stack here.
    """
    limit = json_depth_limit() if max_depth is None else max_depth
    stack: list[tuple[Any, int, tuple[Any, ...]]] = [(value, 0, root)]
    while stack:
        node, depth, path = stack.pop()
        if isinstance(node, str):
            problem = json_string_problem(node)
            if problem:
                raise _invalid(path, problem)
            continue
        if isinstance(node, float) and not math.isfinite(node):
            # NaN / Infinity (Python's decoder accepts them; 1e400 is inf): jsonb cannot hold them.
            raise _invalid(path, "Numbers must be finite (no NaN or Infinity).")
        if not isinstance(node, dict | list):
            continue
        if depth >= limit:
            raise _invalid(path, f"Nested deeper than {limit} levels (API_MAX_JSON_DEPTH).")
        if isinstance(node, dict):
            for key, item in node.items():
                problem = json_string_problem(key)
                if problem:
                    raise _invalid(path + (key,), f"Field name: {problem}")
                stack.append((item, depth + 1, path + (key,)))
        else:
            stack.extend((item, depth + 1, path + (index,)) for index, item in enumerate(node))


def json_value_storable_check(value: Any) -> None:
    """``json_value_check`` for a decoded value of any size, e.g. a service's answer about to be
    stored: one C-level ``json.dumps`` and a regex pass decide; the walk (which names the place)
    only runs when something is wrong."""
    try:
        # ensure_ascii: NUL and surrogates become \u escapes; allow_nan=False: NaN and inf raise.
        text = json.dumps(value, default=str, allow_nan=False)
    except ValueError:
        text = "\\u0000"  # not storable: let the walk find the place and name it
    if _SUSPECT_ESCAPE.search(text) is None or _escapes_clean(text):
        return
    json_value_check(value, max_depth=10**6)


def text_scrub(text: str) -> str:
    """``text`` with NUL and lone surrogates replaced by U+FFFD, for storing what a peer sent."""
    return _BAD_CHAR.sub("\ufffd", text)


def _invalid(path: tuple[Any, ...], message: str) -> Exception:
    # Imported here: berrys_portal.errors imports DRF's views, which load this parser.
    from berrys_portal.errors import InvalidInput

    label = _label(path)
    return InvalidInput(f"Invalid input. {label}: {message}", errors={label: [message]})


def _too_deep(text: str, limit: int) -> bool:
    """Whether the JSON ``text`` nests deeper than ``limit``, decided without decoding it.

    Strings are cut out, then each round deletes the innermost ``[]``/``{}`` pairs (one
    layer per round, C-speed regex passes); anything left after ``limit`` rounds is
    deeper. Malformed bracketing is left for the decoder to report.
    """
    if text.count("[") + text.count("{") <= limit:
        return False
    skeleton = _NOT_BRACKET.sub("", _STRING.sub("", text))
    for _ in range(limit):
        shorter = _LEAF_PAIR.sub("", skeleton)
        if not shorter or shorter == skeleton:
            return False
        skeleton = shorter
    return True


def _escapes_clean(text: str) -> bool:
    """Whether no ``\\u`` escape in ``text`` decodes to NUL or to half a surrogate pair
    (a high escape directly followed by a low one is a pair, as the decoder reads it).
    A Python loop, but over the escapes only, and only run when the quick search saw one."""
    high_end = -1  # where an unpaired high-surrogate escape ended
    for match in _ESCAPE.finditer(text):
        code = match.group(1)
        point = int(code, 16) if code else -1
        if high_end >= 0:
            if match.start() == high_end and 0xDC00 <= point <= 0xDFFF:
                high_end = -1
                continue
            return False
        if point == 0 or 0xDC00 <= point <= 0xDFFF:
            return False
        if 0xD800 <= point <= 0xDBFF:
            high_end = match.end()
    return high_end < 0


def _depth_error(limit: int) -> Exception:
    return _invalid((), f"Nested deeper than {limit} levels (API_MAX_JSON_DEPTH).")


def json_loads_checked(text: str | bytes) -> Any:
    """``json.loads`` under the rule: depth checked before decoding (the decoder recurses),
    strings checked after. Raises ``InvalidInput`` naming the place, or ``ValueError``
    for text that is not JSON."""
    if isinstance(text, bytes):
        text = text.decode("utf-8")
    limit = json_depth_limit()
    if _too_deep(text, limit):
        raise _depth_error(limit)
    try:
        value = json.loads(text, parse_constant=_refuse_constant)
    except RecursionError:  # only malformed text the pre-check let through can get here
        raise _depth_error(limit) from None
    if _SUSPECT_ESCAPE.search(text) is not None and not _escapes_clean(text):
        json_value_check(value, max_depth=limit)  # exact, and names the place
    return value


def json_loads_bounded(text: str | bytes) -> Any:
    """``json.loads`` for JSON the portal did not get from its own callers (a service's answer):
    ``ValueError`` if it nests deeper than ``API_MAX_JSON_DEPTH``, so the caller treats it as
    text instead of crashing in the decoder (RecursionError) or later, walking it. Strings are
    not checked: an answer may carry NUL; whoever stores it must check."""
    if isinstance(text, bytes):
        text = text.decode(json.detect_encoding(text), "surrogatepass")  # as json.loads does
    if _too_deep(text, json_depth_limit()):
        raise ValueError(f"JSON nested deeper than {json_depth_limit()} levels")
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("JSON nested too deeply") from None


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
            return json_loads_checked(text)
        except ValueError as exc:  # not JSON (InvalidInput is not a ValueError)
            raise ParseError(f"JSON parse error - {exc}") from None


def _refuse_constant(name: str) -> Any:
    # NaN and Infinity are not JSON (DRF's STRICT_JSON does the same).
    raise ValueError(f"{name} is not valid JSON")


class CheckedJSONFormField(forms.JSONField):
    """A form's JSON field (admin: edited run input, answers, service metadata) with the same rule,
    shown as a form error instead of a 500 from the decoder or from PostgreSQL."""

    def to_python(self, value):
        if isinstance(value, str) and not self.disabled and _too_deep(value, json_depth_limit()):
            raise ValidationError(f"Nested deeper than {json_depth_limit()} levels (API_MAX_JSON_DEPTH).")
        try:
            converted = super().to_python(value)
        except RecursionError:  # malformed text the pre-check let through
            raise ValidationError(f"Nested deeper than {json_depth_limit()} levels (API_MAX_JSON_DEPTH).") from None
        try:
            json_value_check(converted)
        except Exception as exc:  # InvalidInput (imported lazily, see _invalid)
            errors = getattr(exc, "errors", None)
            if not errors:
                raise
            label, messages = next(iter(errors.items()))
            prefix = "" if label == "body" else f"{label}: "
            raise ValidationError(prefix + " ".join(messages)) from None
        return converted

    def bound_data(self, data, initial):
        # Re-displaying the refused text must not decode it again (it is what was too deep).
        if isinstance(data, str) and not self.disabled and _too_deep(data, json_depth_limit()):
            return InvalidJSONInput(data)
        return super().bound_data(data, initial)
