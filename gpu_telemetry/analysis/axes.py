"""What the panels of every picture share (plots and reports): a y-range a person can read,
and a panel that says which GPU did not report its metric instead of staying blank."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

NOT_REPORTED = "not reported by this GPU"

# The smallest y-span per unit: matplotlib gives a flat series (a fanless card's fan at 0 %, a
# clock pinned at its maximum) a span of +-0.04 around the value, which reads as noise.
_MIN_SPAN = {"°C": 5.0, "W": 10.0, "MHz": 100.0}
_PAD = 0.05


def readable_limits(values: Iterable[float | None], unit: str) -> tuple[float, float] | None:
    """(low, high) for the y-axis of these values, or None when there is no value at all.

    Percentages always get 0-100 (more if a reading exceeds it); other units at least the
    unit's minimum span, centred on the values, so a flat series is a flat line mid-panel."""
    finite = [float(v) for v in values if v is not None and math.isfinite(float(v))]
    if not finite:
        return None
    low, high = min(finite), max(finite)
    if unit == "%":
        top = max(100.0, high)
        return (min(0.0, low) - top * _PAD / 2, top * (1 + _PAD / 2))
    minimum = _MIN_SPAN.get(unit, max(1.0, abs(high) * 0.1))
    if high - low < minimum:
        centre = (low + high) / 2
        low, high = centre - minimum / 2, centre + minimum / 2
    pad = (high - low) * _PAD
    return (low - pad, high + pad)


def note_not_reported(ax, missing: Sequence[str], total: int) -> None:
    """Write in the panel which GPUs have no value for its metric: the words alone when the
    picture has one GPU, else followed by the GPUs' labels."""
    if not missing:
        return
    text = NOT_REPORTED if total <= 1 else f"{NOT_REPORTED}: " + ", ".join(missing)
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=10,
            color="#666666", zorder=5, wrap=True)
