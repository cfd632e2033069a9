"""The overview's throughput sparkline, drawn on the server as SVG (no script, no chart library)."""

from __future__ import annotations

import msgspec

WIDTH = 300
HEIGHT = 48
PAD = 2


class Sparkline(msgspec.Struct, frozen=True, kw_only=True):
    points: str  # the polyline's "x,y x,y ..." in a WIDTH x HEIGHT view box
    area: str  # the same line closed along the bottom, for the filled area
    peak: int  # the highest count
    total: int
    width: int = WIDTH
    height: int = HEIGHT


def sparkline(counts: list[int]) -> Sparkline:
    """Scale ``counts`` (oldest first) into the view box; all zeros is a flat line at the bottom."""
    peak = max(counts, default=0)
    step = (WIDTH - 2 * PAD) / max(1, len(counts) - 1)
    coords = []
    for index, count in enumerate(counts):
        x = PAD + index * step
        y = HEIGHT - PAD - (count / peak * (HEIGHT - 2 * PAD) if peak else 0)
        coords.append(f"{x:.1f},{y:.1f}")
    points = " ".join(coords)
    bottom = HEIGHT - PAD
    area = f"{PAD:.1f},{bottom:.1f} {points} {PAD + (len(counts) - 1) * step:.1f},{bottom:.1f}" if counts else ""
    return Sparkline(points=points, area=area, peak=peak, total=sum(counts))
