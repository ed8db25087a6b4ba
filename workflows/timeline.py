"""The run page's timeline: an inline SVG with one bar per step and one per attempt.

Pure function of the rows (no queries of its own); the admin passes prefetched steps.
"""

from __future__ import annotations

from datetime import datetime

from django.utils import timezone
from django.utils.html import escape
from django.utils.safestring import SafeString, mark_safe

from workflows.models import StepRun

COLOURS = {
    "succeeded": "#2e7d32", "fallback": "#ef6c00", "skipped": "#9e9e9e", "failed": "#c62828",
    "running": "#1565c0", "retrying": "#f9a825", "waiting": "#6a1b9a", "queued": "#90a4ae",
    "pending": "#cfd8dc", "retry": "#f9a825", "sent": "#1565c0", "worker_lost": "#6d4c41",
}
WIDTH, LABEL, ROW, BAR = 900, 170, 22, 12


def run_timeline_svg(*, started_at: datetime | None, steps: list[StepRun], now: datetime | None = None) -> SafeString:
    """SVG bars: a light bar per step (its span) and a solid bar per attempt, on one time axis."""
    now = now or timezone.now()
    spans = [(s.started_at, s.finished_at or now) for s in steps if s.started_at]
    attempts = [a for s in steps for a in s.attempts.all()]
    if not started_at or not spans:
        return mark_safe('<p class="help">Nothing has run yet.</p>')
    t0 = min([started_at] + [a.started_at for a in attempts] + [b for b, _ in spans])
    t1 = max([e for _, e in spans] + [a.finished_at or now for a in attempts] + [t0])
    total = max((t1 - t0).total_seconds(), 0.001)
    plot = WIDTH - LABEL - 10

    def x(t: datetime) -> float:
        return LABEL + plot * (t - t0).total_seconds() / total

    height = ROW * len(steps) + 24
    parts = [f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
             f'role="img" aria-label="Run timeline" style="font: 11px sans-serif">']
    for i, step in enumerate(steps):
        y = i * ROW + 4
        parts.append(f'<text x="4" y="{y + BAR - 2}">{escape(step.index)}. {escape(step.name[:24])}</text>')
        if step.started_at:
            start, end = x(step.started_at), x(step.finished_at or now)
            colour = COLOURS.get(step.status, "#999")
            parts.append(
                f'<rect x="{start:.1f}" y="{y}" width="{max(end - start, 1):.1f}" height="{BAR}" '
                f'fill="{colour}" fill-opacity="0.25"><title>{escape(step.name)}: {escape(step.status)}'
                f"</title></rect>"
            )
        for a in step.attempts.all():
            start, end = x(a.started_at), x(a.finished_at or now)
            colour = COLOURS.get(a.outcome, "#1565c0")
            ms = ((a.finished_at or now) - a.started_at).total_seconds() * 1000
            label = f"attempt {a.number}: {a.get_outcome_display() or '?'} {a.response_status or ''} {ms:.0f} ms"
            parts.append(
                f'<rect x="{start:.1f}" y="{y + 2}" width="{max(end - start, 2):.1f}" height="{BAR - 4}" '
                f'fill="{colour}"><title>{escape(label)}</title></rect>'
            )
    axis_y = len(steps) * ROW + 14
    parts.append(f'<text x="{LABEL}" y="{axis_y}">0 s</text>')
    parts.append(f'<text x="{WIDTH - 10}" y="{axis_y}" text-anchor="end">{total:.3f} s</text>')
    parts.append("</svg>")
    return mark_safe("".join(parts))  # noqa: S308 - every interpolated text is escaped above
