"""Request adapters: rewrite a request body for its target service (model-mismatch fixes).

The ServiceClient calls ``adapt_request`` before every call. This is the hook;
the data-driven rules (drop / rename / default / map, editable in the admin)
plug in here.
"""

from __future__ import annotations

from typing import Any


def adapt_request(*, service_type: str, method: str, endpoint: str, data: Any) -> Any:
    """Return the body to send. No rules yet: the body is sent unchanged."""
    return data
