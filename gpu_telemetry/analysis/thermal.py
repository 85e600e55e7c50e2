"""Thermal analysis of one GPU through one run: pure numbers in, numbers out (no database).

A GPU under a constant load heats like a first-order system, and cools like one when the load
stops:

    T(t) = T_inf + (T0 - T_inf) * exp(-t / tau)

For a fixed tau the model is linear in (T_inf, T0 - T_inf), so each tau has a closed-form least
squares answer; tau itself is searched on a log scale (a coarse grid, then golden-section
search around its best point) within [sample interval, 20 x duration]. No scipy: numpy is here
anyway (matplotlib needs it).

Anything that cannot be computed is None, with the reason in `notes`, never 0.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

# A fit must see at least this many points: four values for three parameters and some slack.
MIN_FIT_POINTS = 5
# A change smaller than this (or than 3 x the fit's own rmse) over the phase is "no response":
# temp_c is whole degrees, so a degree or two is rounding and sensor noise.
MIN_RESPONSE_C = 2.0
TAU_MAX_FACTOR = 20.0
GRID_POINTS = 48
# Share of the bench, at its end, taken as "steady" when the fit cannot say (and for clocks).
TAIL_FRACTION = 0.2
RISE_FRACTION = 0.9
# degrees_per_watt needs a real change of power to mean anything.
MIN_POWER_DELTA_W = 1.0
_GOLDEN = (math.sqrt(5) - 1) / 2


@dataclass(frozen=True)
class Phase:
    """One phase of one GPU: sample times in seconds (any origin, shared by every phase of the
    run) and the readings at those times; None where the GPU did not report a value."""

    t_s: Sequence[float] = ()
    temp_c: Sequence[float | None] = ()
    power_w: Sequence[float | None] = ()
    sm_mhz: Sequence[float | None] = ()
    throttle: dict[str, Sequence[bool | None]] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.t_s)

    def series(self, name: str) -> tuple[np.ndarray, np.ndarray]:
        """(times, values) of the samples that have a value, sorted by time."""
        values = getattr(self, name)
        pairs = sorted((t, v) for t, v in zip(self.t_s, values, strict=False)
                       if v is not None and math.isfinite(t) and math.isfinite(v))
        if not pairs:
            return np.empty(0), np.empty(0)
        times, readings = zip(*pairs, strict=True)
        return np.asarray(times, dtype=float), np.asarray(readings, dtype=float)


@dataclass(frozen=True)
class FirstOrderFit:
    """T(t) = temp_inf_c + (temp0_c - temp_inf_c) * exp(-(t - t0_s) / tau_s)."""

    temp_inf_c: float
    temp0_c: float
    tau_s: float
    t0_s: float
    duration_s: float
    rmse_c: float
    points: int
    tau_at_bound: bool

    def at(self, t_s) -> np.ndarray:
        t = np.asarray(t_s, dtype=float) - self.t0_s
        return self.temp_inf_c + (self.temp0_c - self.temp_inf_c) * np.exp(-t / self.tau_s)

    @property
    def observed_change_c(self) -> float:
        """How far the fitted curve moves within the data (not the extrapolated T_inf)."""
        return (self.temp_inf_c - self.temp0_c) * (1 - math.exp(-self.duration_s / self.tau_s))

    def time_to(self, target_c: float) -> float | None:
        """Seconds from t0_s until the curve reaches target_c; None if it never does."""
        span = self.temp_inf_c - self.temp0_c
        remaining = self.temp_inf_c - target_c
        if span == 0:
            return None
        ratio = remaining / span
        if ratio >= 1:
            return 0.0
        if ratio <= 0:
            return None
        return -self.tau_s * math.log(ratio)


def _sse_and_coefficients(t: np.ndarray, y: np.ndarray, tau: float) -> tuple[float, float, float]:
    """Least squares of y = a + b * exp(-t / tau): (sum of squared errors, a, b)."""
    e = np.exp(-t / tau)
    e_mean = e.mean()
    de = e - e_mean
    var = float(de @ de)
    if var <= 0:
        a = float(y.mean())
        return float(((y - a) ** 2).sum()), a, 0.0
    b = float(de @ (y - y.mean())) / var
    a = float(y.mean() - b * e_mean)
    residual = y - a - b * e
    return float(residual @ residual), a, b


def fit_first_order(t_s: Sequence[float], temp_c: Sequence[float]) -> FirstOrderFit | None:
    """The best first-order response through the points, or None when there are too few
    points, no time span or no variation at all."""
    t = np.asarray(t_s, dtype=float)
    y = np.asarray(temp_c, dtype=float)
    keep = np.isfinite(t) & np.isfinite(y)
    t, y = t[keep], y[keep]
    order = np.argsort(t, kind="stable")
    t, y = t[order], y[order]
    if len(t) < MIN_FIT_POINTS or np.ptp(y) == 0:
        return None
    t0 = float(t[0])
    t = t - t0
    duration = float(t[-1])
    steps = np.diff(t)
    steps = steps[steps > 0]
    if duration <= 0 or not len(steps):
        return None
    low = math.log(float(np.median(steps)))
    high = math.log(TAU_MAX_FACTOR * duration)
    if high <= low:
        return None

    def sse(log_tau: float) -> float:
        return _sse_and_coefficients(t, y, math.exp(log_tau))[0]

    grid = np.linspace(low, high, GRID_POINTS)
    values = [sse(g) for g in grid]
    best = int(np.argmin(values))
    left, right = grid[max(best - 1, 0)], grid[min(best + 1, GRID_POINTS - 1)]
    # Golden-section search: the grid step is small enough that the bracket holds one minimum.
    x1 = right - _GOLDEN * (right - left)
    x2 = left + _GOLDEN * (right - left)
    f1, f2 = sse(x1), sse(x2)
    while right - left > 1e-7:
        if f1 <= f2:
            right, x2, f2 = x2, x1, f1
            x1 = right - _GOLDEN * (right - left)
            f1 = sse(x1)
        else:
            left, x1, f1 = x1, x2, f2
            x2 = left + _GOLDEN * (right - left)
            f2 = sse(x2)
    log_tau = min(((x1, f1), (x2, f2), (grid[best], values[best])), key=lambda p: p[1])[0]
    tau = math.exp(log_tau)
    error, a, b = _sse_and_coefficients(t, y, tau)
    at_bound = log_tau - low < 0.01 or high - log_tau < 0.01
    return FirstOrderFit(temp_inf_c=a, temp0_c=a + b, tau_s=tau, t0_s=t0, duration_s=duration,
                         rmse_c=math.sqrt(error / len(t)), points=len(t), tau_at_bound=at_bound)


def usable_response(fit: FirstOrderFit | None, *, rising: bool) -> tuple[bool, str | None]:
    """Whether a fit describes a real heating (rising) or cooling response; if not, why."""
    if fit is None:
        return False, f"fewer than {MIN_FIT_POINTS} distinct readings"
    change = fit.observed_change_c if rising else -fit.observed_change_c
    threshold = max(MIN_RESPONSE_C, 3 * fit.rmse_c)
    if change < threshold:
        word = "rise" if rising else "fall"
        return False, f"no {word} above the noise ({change:+.1f} °C, rmse {fit.rmse_c:.1f} °C)"
    if fit.tau_at_bound:
        return False, (f"time constant at the search bound ({fit.tau_s:.0f} s): the curve is "
                       "not first-order over this phase")
    return True, None


def _mean(values: np.ndarray) -> float | None:
    return float(values.mean()) if len(values) else None


def tail(times: np.ndarray, values: np.ndarray, fraction: float = TAIL_FRACTION) -> np.ndarray:
    """The values in the last `fraction` of the time span."""
    if not len(times):
        return values
    cut = times[-1] - fraction * (times[-1] - times[0])
    return values[times >= cut]


def smoothed(values: np.ndarray, window: int = 5) -> np.ndarray:
    """Centred moving average; shorter at the ends."""
    if len(values) < 3:
        return values.astype(float)
    half = max(1, min(window, len(values)) // 2)
    cumulative = np.concatenate(([0.0], np.cumsum(values, dtype=float)))
    index = np.arange(len(values))
    lo = np.clip(index - half, 0, len(values))
    hi = np.clip(index + half + 1, 0, len(values))
    return (cumulative[hi] - cumulative[lo]) / (hi - lo)


@dataclass
class ThermalSummary:
    """What the report says about one GPU; field names are the JSON keys."""

    bench_s: float | None = None
    idle_temp_c: float | None = None
    peak_temp_c: float | None = None
    steady_temp_c: float | None = None
    rise_90_s: float | None = None
    tau_heat_s: float | None = None
    tau_cool_s: float | None = None
    throttle_share: dict[str, float] | None = None
    sm_clock_drop_pct: float | None = None
    mean_power_w: float | None = None
    idle_power_w: float | None = None
    degrees_per_watt: float | None = None
    notes: list[str] = field(default_factory=list)
    heat_fit: FirstOrderFit | None = None
    cool_fit: FirstOrderFit | None = None
    bench_t0_s: float | None = None


def _idle_window(idle: Phase) -> Phase:
    """The second half of the idle phase: the GPU has settled by then (a run started right
    after other work begins warm)."""
    if len(idle) < 2:
        return idle
    times = np.asarray(idle.t_s, dtype=float)
    cut = times.min() + 0.5 * (times.max() - times.min())
    keep = [i for i, t in enumerate(idle.t_s) if t >= cut]

    def pick(seq):
        return [seq[i] for i in keep] if len(seq) == len(idle.t_s) else []

    return Phase(t_s=pick(idle.t_s), temp_c=pick(idle.temp_c), power_w=pick(idle.power_w))


def throttle_share(bench: Phase) -> dict[str, float] | None:
    """Fraction of bench samples with each reason active; reasons never reported are left out
    and a null reading does not count in the denominator."""
    shares = {}
    for reason, values in bench.throttle.items():
        known = [bool(v) for v in values if v is not None]
        if known:
            shares[reason] = sum(known) / len(known)
    return shares or None


def analyse(idle: Phase, bench: Phase, cool: Phase) -> ThermalSummary:
    """The thermal summary of one GPU from its idle-before, bench and cooling phases."""
    out = ThermalSummary()
    notes = out.notes

    idle_window = _idle_window(idle)
    _, idle_temps = idle_window.series("temp_c")
    _, idle_powers = idle_window.series("power_w")
    out.idle_temp_c = _mean(idle_temps)
    out.idle_power_w = _mean(idle_powers)
    if out.idle_temp_c is None:
        notes.append("no idle temperature before the bench")

    bench_t, bench_temp = bench.series("temp_c")
    if len(bench.t_s):
        out.bench_t0_s = float(min(bench.t_s))
        out.bench_s = float(max(bench.t_s) - min(bench.t_s))
    else:
        notes.append("no bench rows")

    all_temps = [v for phase in (idle, bench, cool) for v in phase.temp_c if v is not None]
    out.peak_temp_c = float(max(all_temps)) if all_temps else None

    # Heating: the fit's origin is the first bench sample, so rise_90_s counts from there.
    if len(bench_t):
        heat = fit_first_order(bench_t, bench_temp)
        ok, why = usable_response(heat, rising=True)
        out.heat_fit = heat
        if ok:
            out.tau_heat_s = heat.tau_s
            out.steady_temp_c = heat.temp_inf_c
            reached = 1 - math.exp(-heat.duration_s / heat.tau_s)
            if reached < 0.95:
                notes.append(f"steady_temp_c is extrapolated: the bench ended at "
                             f"{100 * reached:.0f} % of the fitted rise")
        else:
            out.steady_temp_c = float(tail(bench_t, bench_temp).mean())
            notes.append(f"no heating fit ({why}): tau_heat_s is null and steady_temp_c is the "
                         f"mean of the last {100 * TAIL_FRACTION:.0f} % of the bench")
        out.rise_90_s = _rise_90(out, heat if ok else None, bench_t, bench_temp)
    elif len(bench.t_s):
        notes.append("no bench temperature readings")

    cool_t, cool_temp = cool.series("temp_c")
    if len(cool_t):
        fit = fit_first_order(cool_t, cool_temp)
        ok, why = usable_response(fit, rising=False)
        out.cool_fit = fit
        if ok:
            out.tau_cool_s = fit.tau_s
            reached = 1 - math.exp(-fit.duration_s / fit.tau_s)
            if reached < 0.95:
                # Less than 3 tau of data: T_inf and tau trade off, tau is loose (a 300 s
                # cooldown of a tau 200 s card misses by over 10 % one run in six).
                notes.append(f"tau_cool_s is uncertain: the cooling rows end at "
                             f"{100 * reached:.0f} % of the fitted fall")
        else:
            notes.append(f"no cooling fit ({why}): tau_cool_s is null")
    else:
        notes.append("no cooling rows after the bench: tau_cool_s is null")

    out.throttle_share = throttle_share(bench)

    sm_t, sm = bench.series("sm_mhz")
    run_sm = [v for phase in (idle, bench, cool) for v in phase.sm_mhz if v is not None]
    if len(sm) and run_sm and max(run_sm) > 0:
        out.sm_clock_drop_pct = 100 * (1 - float(np.median(tail(sm_t, sm))) / max(run_sm))

    _, bench_power = bench.series("power_w")
    out.mean_power_w = _mean(bench_power)
    if (out.steady_temp_c is not None and out.idle_temp_c is not None
            and out.mean_power_w is not None and out.idle_power_w is not None):
        delta_w = out.mean_power_w - out.idle_power_w
        if delta_w > MIN_POWER_DELTA_W:
            out.degrees_per_watt = (out.steady_temp_c - out.idle_temp_c) / delta_w
    return out


def _rise_90(out: ThermalSummary, heat: FirstOrderFit | None, bench_t: np.ndarray,
             bench_temp: np.ndarray) -> float | None:
    base = out.idle_temp_c
    if base is None:
        base = heat.temp0_c if heat is not None else float(bench_temp[0])
        out.notes.append("rise_90_s measured from the bench's first temperature (no idle)")
    rise = out.steady_temp_c - base
    if rise < MIN_RESPONSE_C:
        out.notes.append("no rise above idle: rise_90_s is null")
        return None
    target = base + RISE_FRACTION * rise
    if heat is not None:
        reached = heat.time_to(target)
        if reached is not None:
            # The fit starts at the first temperature reading; the bench at its first row.
            return reached + heat.t0_s - (out.bench_t0_s if out.bench_t0_s is not None
                                          else heat.t0_s)
    curve = smoothed(bench_temp)
    above = np.nonzero(curve >= target)[0]
    if not len(above):
        out.notes.append("the bench never reached 90 % of the rise: rise_90_s is null")
        return None
    return float(bench_t[above[0]] - bench_t[0])
