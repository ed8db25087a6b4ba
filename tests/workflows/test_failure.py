"""Reading a service's own error text out of its answer (workflows.failure)."""

from __future__ import annotations

import pytest

from workflows.failure import CAUSE_MAX_CHARS, service_error_text

CHAT_BUG = ('{"detail": "Internal Server Error", '
            '"error": "ProjectCreateRequest got unexpected field(s): status"}')


@pytest.mark.parametrize(("body", "status", "expected"), [
    # The guide's Project Coordinator: the generic detail gives way to the specific error.
    (CHAT_BUG, 500, "ProjectCreateRequest got unexpected field(s): status"),
    ('{"detail": "Internal Server Error (simulated fault)"}', 500, "Internal Server Error (simulated fault)"),
    ('{"message": "quota exceeded", "code": 42}', 429, "quota exceeded"),
    ('{"error": {"message": "no such task", "code": "not_found"}}', 404, "no such task"),
    ('{"detail": "Not Found"}', 404, "Not Found"),  # only the generic phrase: still said
    ('{"detail": ["a is required", "b is required"]}', 422, "a is required; b is required"),
    ('{"id": 3, "state": "broken"}', 500, '{"id": 3, "state": "broken"}'),  # no error key: the first line
    ("<html>\n<title>502 Bad Gateway</title>\n</html>", 502, "<html>"),
    ("\n\n  upstream timed out\nmore text", 504, "upstream timed out"),
    ("", 500, ""),
    (None, 500, ""),
])
def test_it_reads_the_services_error_text(body, status, expected):
    assert service_error_text(body, status=status) == expected


def test_it_cuts_a_very_long_cause():
    text = service_error_text('{"error": "' + "x" * 2000 + '"}', status=500)
    assert len(text) == CAUSE_MAX_CHARS and text.endswith("…")
