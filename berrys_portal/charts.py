"""The one chart module: the status palette and chart geometry for every admin page.

Every function here is pure (numbers in, shapes out) so the templates only loop
over rectangles, points and labels; there is no JavaScript and no build step. It is
the kernel's, so the registry's, the workflows' and the dashboard's pages draw a
status with the same colour (``color``) and read no app's models.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from django.utils.html import escape, format_html
from django.utils.safestring import SafeString, mark_safe

# One palette for statuses across the pages (works on light and dark admin themes).
STATUS_COLORS = {
    "passing": "#2e9d4a",
    "warning": "#d89b16",
    "critical": "#d13b3b",
    "maintenance": "#6b7fb3",
    "unknown": "#9aa0a6",
    "succeeded": "#2e9d4a",
    "failed": "#d13b3b",
    "cancelled": "#7a7a7a",
    "running": "#2f7ed8",
    "pending": "#9aa0a6",
    "queued": "#8fb8e8",
    "retrying": "#d89b16",
    "waiting": "#9b59b6",
    "skipped": "#b8b8b8",
    "fallback": "#c7a343",
    "retry": "#d89b16",
    "sent": "#2f7ed8",
    "worker_lost": "#8d6e63",
    "closed": "#2e9d4a",
    "open": "#d13b3b",
    "half-open": "#d89b16",
}


# Attempt outcomes worded for operators ("sent": the try is in flight, or its worker died
# and the reconciler has not closed it yet).
ATTEMPT_LABELS = {"": "in progress", None: "in progress", "sent": "sent (in flight)",
                  "worker_lost": "Outcome unknown — worker lost"}


def color(status: str) -> str:
    return STATUS_COLORS.get(status, "#9aa0a6")


@dataclass
class Rect:
    x: float
    y: float
    w: float
    h: float
    fill: str
    title: str = ""
    css: str = ""

    def __post_init__(self) -> None:
        # Rounded once here so templates print them as they are (no per-value filters).
        self.x, self.y, self.w, self.h = (round(v, 1) for v in (self.x, self.y, self.w, self.h))


def stacked_bars(
    buckets: list[datetime], counts: dict[datetime, dict[str, int]], statuses: list[str],
    *, width: int = 720, height: int = 140, gap: float = 2.0,
) -> dict:
    """One stacked bar per bucket (hour), a segment per status."""
    n = max(len(buckets), 1)
    slot = width / n
    peak = max((sum(counts.get(b, {}).values()) for b in buckets), default=0) or 1
    rects: list[Rect] = []
    for i, bucket in enumerate(buckets):
        y = float(height)
        for status in statuses:
            value = counts.get(bucket, {}).get(status, 0)
            if not value:
                continue
            h = value / peak * (height - 4)
            y -= h
            rects.append(
                Rect(i * slot + gap / 2, y, max(slot - gap, 1), h, color(status),
                     f"{bucket:%H:00} UTC: {value} {status}")
            )
    labels = [
        {"x": i * slot + slot / 2, "text": f"{b:%H}h"} for i, b in enumerate(buckets) if i % 3 == 0
    ]
    return {"width": width, "height": height, "rects": rects, "labels": labels, "peak": peak}


def uptime_bars(days: list[dict], *, width: int = 720, height: int = 34, gap: float = 2.0) -> dict:
    """Status-page bars: one per day, coloured by that day's uptime."""
    slot = width / max(len(days), 1)
    rects = []
    for i, day in enumerate(days):
        pct = day["uptime"]
        if pct is None:
            fill, text = "#d0d4d8", "no data"
        else:
            fill = "#2e9d4a" if pct >= 99.9 else "#8cc63f" if pct >= 99 else "#d89b16" if pct >= 95 else "#d13b3b"
            text = f"{pct:.2f}% up"
        rects.append(Rect(i * slot + gap / 2, 0, max(slot - gap, 1), height, fill, f"{day['date']:%Y-%m-%d}: {text}"))
    return {"width": width, "height": height, "rects": rects}


def sparkline(values: list[float], *, width: int = 720, height: int = 60) -> dict:
    """A polyline through ``values`` (oldest first), scaled to the box."""
    if not values:
        return {"width": width, "height": height, "points": "", "max": None, "last": None}
    peak = max(values) or 1.0
    step = width / max(len(values) - 1, 1)
    pts = " ".join(
        f"{i * step:.1f},{height - 2 - v / peak * (height - 6):.1f}" for i, v in enumerate(values)
    )
    return {"width": width, "height": height, "points": pts, "max": peak, "last": values[-1],
            "median": sorted(values)[len(values) // 2]}


def timeline(steps: list[dict], start: datetime, end: datetime, *, width: int = 720,
             row: int = 26, label_w: int = 170) -> dict:
    """Gantt rows: one per step; attempts as bars, waits between retries as thin lines."""
    span = max((end - start).total_seconds(), 0.001)
    plot_w = width - label_w - 8

    def x(t: datetime) -> float:
        return label_w + max(0.0, min((t - start).total_seconds() / span, 1.0)) * plot_w

    rows = []
    for i, step in enumerate(steps):
        y = i * row + 4
        bars, waits = [], []
        prev_end = None
        for att in step["attempts"]:
            x0, x1 = x(att["started_at"]), x(att["finished_at"] or end)  # None: still in flight
            if prev_end is not None and x0 > prev_end + 0.5:
                waits.append({"x1": prev_end, "x2": x0, "y": y + row / 2 - 3})
            bars.append(Rect(x0, y + 3, max(x1 - x0, 3), row - 12, color(att["outcome"] or "running"),
                             f"attempt {att['number']}: {ATTEMPT_LABELS.get(att['outcome'], att['outcome'])}"
                             f"{' HTTP ' + str(att['response_status']) if att['response_status'] else ''}"
                             f"{' — ' + att['error'][:120] if att['error'] else ''}"))
            prev_end = x1
        if not step["attempts"] and step["started_at"]:
            x0 = x(step["started_at"])
            x1 = x(step["finished_at"] or end)
            bars.append(Rect(x0, y + 3, max(x1 - x0, 3), row - 12, color(step["status"]),
                             f"{step['name']}: {step['status']}"))
        rows.append({"y": y, "text_y": y + row / 2 + 1, "name": step["name"], "status": step["status"],
                     "dot": color(step["status"]), "bars": bars, "waits": waits,
                     "attempts": len(step["attempts"])})
    ticks = []
    for k in range(5):
        t = start + timedelta(seconds=span * k / 4)
        anchor = "start" if k == 0 else "end" if k == 4 else "middle"  # keep the ends inside the box
        ticks.append({"x": label_w + plot_w * k / 4, "text": _duration(span * k / 4), "at": t, "anchor": anchor})
    return {"width": width, "height": len(steps) * row + 24, "rows": rows, "ticks": ticks,
            "axis_y": len(steps) * row + 8, "label_w": label_w}


def flow_diagram(steps: list[dict], highlight_index: int | None, *, box_w: int = 200, box_h: int = 46,
                 gap: int = 30, per_row: int = 4) -> dict:
    """The definition as boxes joined by arrows, wrapping every ``per_row`` steps."""
    boxes, arrows = [], []
    for i, step in enumerate(steps):
        r, c = divmod(i, per_row)
        bx, by = 6 + c * (box_w + gap), 6 + r * (box_h + gap)
        boxes.append({
            "x": bx, "y": by, "w": box_w, "h": box_h, "cx": bx + box_w / 2,
            "name": step["name"][:28], "sub": (step.get("service_type") or step.get("kind") or "")[:22],
            "fill": color(step["status"]), "status": step["status"],
            "optional": not step.get("required", True), "highlight": i == highlight_index,
        })
        if i:
            prev = boxes[i - 1]
            if prev["y"] == by:
                arrows.append({"x1": prev["x"] + box_w, "y1": by + box_h / 2, "x2": bx - 2, "y2": by + box_h / 2})
            else:  # wrap: down from the previous box, then to this one
                arrows.append({"x1": prev["cx"], "y1": prev["y"] + box_h, "x2": bx + box_w / 2, "y2": by - 2})
    rows = (len(steps) + per_row - 1) // per_row or 1
    cols = min(len(steps), per_row) or 1
    return {"width": 12 + cols * (box_w + gap) - gap, "height": 12 + rows * (box_h + gap) - gap,
            "boxes": boxes, "arrows": arrows}


def _duration(seconds: float) -> str:
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def status_badge(status: str, label: str | None = None, *, title: str = "") -> SafeString:
    """A status as a small coloured pill (the admin's lists and run pages)."""
    return format_html(
        '<span title="{}" style="background:{};color:#fff;padding:1px 6px;border-radius:8px;font-size:11px">{}</span>',
        title, color(status), label if label is not None else status,
    )


def status_word(status: str) -> SafeString:
    """A status as a bold coloured word (a breaker's live state)."""
    return format_html('<span style="color:{};font-weight:bold">{}</span>', color(status), status)


def latency_svg(points: list[tuple[datetime, float, str]], *, width: int = 640, height: int = 140) -> SafeString:
    """An inline SVG line of probe latency, ``points`` oldest first as (checked at, ms, status);
    probes that did not pass are dots in their status colour. Empty with fewer than two points."""
    if len(points) < 2:
        return mark_safe("")
    pad = 24
    top = max(ms for _, ms, _ in points) or 1.0
    step = (width - 2 * pad) / (len(points) - 1)
    coords = [(pad + i * step, height - pad - (ms / top) * (height - 2 * pad), at, ms, status)
              for i, (at, ms, status) in enumerate(points)]
    line = " ".join(f"{x:.1f},{y:.1f}" for x, y, *_ in coords)
    dots = "".join(
        f'<circle cx="{x:.1f}" cy="{y:.1f}" r="3" fill="{color(status)}">'
        f"<title>{at:%Y-%m-%d %H:%M:%S} {ms:.1f} ms {escape(status)}</title></circle>"
        for x, y, at, ms, status in coords if status != "passing"
    )
    return mark_safe(  # noqa: S308 - numbers, dates and escaped status words only
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" role="img" '
        f'aria-label="probe latency" style="background:#fafafa;border:1px solid #ddd">'
        f'<text x="4" y="14" font-size="11" fill="#555">{top:.0f} ms</text>'
        f'<text x="4" y="{height - 6}" font-size="11" fill="#555">0</text>'
        f'<polyline points="{line}" fill="none" stroke="#417690" stroke-width="1.5"/>{dots}</svg>'
    )
