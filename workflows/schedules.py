"""The workflow engine's periodic tasks, for ``setup_periodic_tasks`` to install as beat rows.

Each entry: a unique ``name``, the Celery ``task`` name, and ``every_seconds``.
"""

from __future__ import annotations

PERIODIC_TASKS: list[dict] = [
    {
        "name": "workflows: reconcile lost steps and human-step timeouts",
        "task": "workflows.reconcile",
        "every_seconds": 15,
    },
]
