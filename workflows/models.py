"""Workflow runs, steps, attempts and events (built by the workflow-engine issue)."""
