"""Query parameters of the API's GET endpoints: only the documented ones are accepted.

A misspelt filter (``?stauts=critical``) used to be ignored, so the caller got
every row and no hint why. Each GET view names the parameters it accepts
(the same ones its drf-spectacular schema documents; tests/test_query_params.py
checks the two agree) and reads them through ``query_params_read``.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from rest_framework import serializers
from rest_framework.request import Request

from berrys_portal.errors import InvalidInput


def _problems(request: Request, allowed: Collection[str], repeatable: Collection[str]) -> dict[str, list[str]]:
    params = request.query_params
    accepted = ", ".join(sorted(allowed)) or "none"
    errors: dict[str, list[str]] = {}
    for name in sorted(set(params) - set(allowed)):
        errors[name] = [f"Unknown query parameter. Accepted: {accepted}."]
    for name in sorted(set(params) & set(allowed) - set(repeatable)):
        if len(params.getlist(name)) > 1:
            errors[name] = ["Given more than once; give it once."]
    return errors


def query_params_read(
    request: Request, *, allowed: Collection[str] = (), repeatable: Collection[str] = ()
) -> dict[str, str | list[str]]:
    """The query parameters as a dict (a list for ``repeatable`` ones).

    Raises ``InvalidInput`` naming every parameter not in ``allowed``, and every
    non-repeatable one given more than once (which value would win is not obvious).
    """
    errors = _problems(request, allowed, repeatable)
    if errors:
        accepted = ", ".join(sorted(allowed)) or "none"
        raise InvalidInput(f"Invalid query parameters: {', '.join(errors)}. Accepted: {accepted}.",
                           errors=errors)
    params = request.query_params
    return {name: params.getlist(name) if name in repeatable else params[name] for name in params}


def query_params_validate(
    request: Request, *, serializer_class: type[serializers.Serializer], repeatable: Collection[str] = ()
) -> dict[str, Any]:
    """The query parameters validated by ``serializer_class`` (whose fields are the accepted
    names); unknown, repeated and invalid parameters are reported together in one 400."""
    fields = serializer_class().fields
    errors: dict[str, Any] = _problems(request, fields, repeatable)
    params = request.query_params
    known = {name: params.getlist(name) if name in repeatable else params[name]
             for name in params if name in fields}
    query = serializer_class(data=known)
    if not query.is_valid():
        errors = {**query.errors, **errors}
    if errors:
        raise serializers.ValidationError(errors)
    return query.validated_data
