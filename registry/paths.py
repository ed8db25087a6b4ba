"""Paths the portal builds or forwards for a caller: no way out of the intended resource.

Two places put caller-controlled text into a URL path sent to a service:

* workflow steps fill ``{placeholders}`` in their path from the run's input
  (``/projects/{project_id}``). A value is one segment: ``path_segment``
  percent-encodes everything outside the unreserved set (``/ ? # %`` included),
  so ``../../internal-admin/x?y#`` stays inside ``/projects/…``, and refuses the
  values that mean something as a whole segment (``.``, ``..``, empty).
* the gateway forwards ``/gateway/{type}/{path}`` to ``{service url}/{path}``.
  ``gateway_path_check`` refuses a path with a ``.`` or ``..`` segment in any
  spelling an upstream server or proxy might decode: percent-encoded once or
  several times (``%2e%2e``, ``..%2f``, ``%252e%252e``), backslashes (``..\\``),
  ``;`` path parameters (``..;/``), NUL truncation and Unicode compatibility
  forms (full-width dots).
"""

from __future__ import annotations

import re
import unicodedata
from typing import Any
from urllib.parse import quote, unquote

from berrys_portal.errors import InvalidInput

# Rounds of percent-decoding looked through; a path still changing after that is refused.
MAX_DECODE_ROUNDS = 4
_DOT_SEGMENTS = {".", ".."}
_SEPARATORS = re.compile(r"[/\\]")


class PathValueError(ValueError):
    """A value cannot be placed in a path segment."""


def path_segment(value: Any) -> str:
    """``value`` as exactly one path segment, percent-encoded."""
    text = str(value)
    if text in _DOT_SEGMENTS or text == "":
        raise PathValueError(f"{text!r} cannot be a path segment (empty, '.' and '..' are refused)")
    return quote(text, safe="")


def query_value(value: Any) -> str:
    """``value`` percent-encoded for a query string (``&``, ``=``, ``#`` cannot add parameters)."""
    return quote(str(value), safe="")


def _segment_is_dots(segment: str) -> bool:
    segment = segment.split(";", 1)[0].split("\x00", 1)[0]  # ..;/ (servlet containers), ..%00
    return unicodedata.normalize("NFKC", segment).strip() in _DOT_SEGMENTS


def _has_dot_segment(path: str) -> bool:
    return any(_segment_is_dots(seg) for seg in _SEPARATORS.split(path))


def gateway_path_check(path: str) -> None:
    """Raise ``InvalidInput`` (400 naming ``path``) if ``path`` could climb out of the service's
    base path at any decoding depth an upstream might apply."""
    current = path
    for _ in range(MAX_DECODE_ROUNDS + 1):
        if _has_dot_segment(current):
            msg = "'.' and '..' path segments are refused, however they are encoded."
            raise InvalidInput(f"Invalid path: {msg}", errors={"path": [msg]})
        decoded = unquote(current, errors="replace") if "%" in current else current
        if decoded == current:
            return
        current = decoded
    msg = f"Percent-encoded more than {MAX_DECODE_ROUNDS} times."
    raise InvalidInput(f"Invalid path: {msg}", errors={"path": [msg]})
