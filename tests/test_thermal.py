"""gpu_telemetry.analysis.thermal: known first-order constants are recovered from noisy whole-degree
readings; degenerate inputs give None and a note, never an exception."""

from __future__ import annotations

import math

import numpy as np
import pytest

from gpu_telemetry.analysis.thermal import Phase, analyse, fit_first_order, throttle_share

TOLERANCE = 0.10


def synthetic_run(*, step_s: float, noise_sd: float, idle_c=35.0, steady_c=80.0,
                  tau_heat_s=120.0, tau_cool_s=200.0, bench_s=900.0, cool_s=900.0,
                  idle_s=300.0, seed=20260104) -> tuple[Phase, Phase, Phase]:
    """Idle, then a step of load at t = 0 held for bench_s, then cooling back towards idle;
    rounded to whole degrees like temp_c."""
    rng = np.random.default_rng(seed)
    t_idle = np.arange(-idle_s, 0, step_s)
    t_bench = np.arange(0, bench_s, step_s)
    t_cool = np.arange(bench_s, bench_s + cool_s, step_s)
    last = t_bench[-1]
    end_c = steady_c + (idle_c - steady_c) * math.exp(-last / tau_heat_s)
    curves = (np.full(len(t_idle), idle_c),
              steady_c + (idle_c - steady_c) * np.exp(-t_bench / tau_heat_s),
              idle_c + (end_c - idle_c) * np.exp(-(t_cool - last) / tau_cool_s))

    def reading(curve):
        return [float(v) for v in np.round(curve + rng.normal(0, noise_sd, len(curve)))]

    return tuple(Phase(t_s=[float(t) for t in times], temp_c=reading(curve))
                 for times, curve in zip((t_idle, t_bench, t_cool), curves, strict=True))


CASES = {
    "5 s sampling, noise 1 C": dict(step_s=5, noise_sd=1.0),
    "1 s sampling, noise 1 C": dict(step_s=1, noise_sd=1.0),
    "5 s sampling, no noise": dict(step_s=5, noise_sd=0.0),
    "other seed": dict(step_s=5, noise_sd=1.0, seed=7),
    "fan 100 %: 35 -> 70 C, tau 90 s": dict(step_s=5, noise_sd=1.0, steady_c=70.0,
                                            tau_heat_s=90.0, tau_cool_s=150.0),
    "slow card: 40 -> 85 C, tau 150 s": dict(step_s=5, noise_sd=1.0, idle_c=40.0,
                                             steady_c=85.0, tau_heat_s=150.0,
                                             tau_cool_s=250.0),
}


@pytest.mark.parametrize("params", CASES.values(), ids=CASES.keys())
def test_known_constants_are_recovered_within_10_percent(params):
    idle, bench, cool = synthetic_run(**params)
    summary = analyse(idle, bench, cool)
    full = {"idle_c": 35.0, "steady_c": 80.0, "tau_heat_s": 120.0, "tau_cool_s": 200.0,
            **params}
    expected = {
        "idle_temp_c": full["idle_c"],
        "steady_temp_c": full["steady_c"],
        "tau_heat_s": full["tau_heat_s"],
        "tau_cool_s": full["tau_cool_s"],
        "rise_90_s": full["tau_heat_s"] * math.log(10),
    }
    for key, want in expected.items():
        got = getattr(summary, key)
        assert got == pytest.approx(want, rel=TOLERANCE), (key, got, want)
    assert summary.notes == []
    assert summary.peak_temp_c >= full["steady_c"] - 1


def test_the_fit_itself_is_tight_without_noise():
    t = np.arange(0, 900, 5.0)
    fit = fit_first_order(t, 80 - 45 * np.exp(-t / 120))
    assert fit.tau_s == pytest.approx(120, rel=1e-4)
    assert fit.temp_inf_c == pytest.approx(80, rel=1e-4)
    assert fit.temp0_c == pytest.approx(35, rel=1e-4)
    assert fit.time_to(35 + 0.9 * 45) == pytest.approx(120 * math.log(10), rel=1e-4)
    assert not fit.tau_at_bound


def flat(n: int, value: float = 40.0, noise_sd: float = 0.0) -> Phase:
    rng = np.random.default_rng(1)
    temps = np.round(value + rng.normal(0, noise_sd, n)) if n else []
    return Phase(t_s=[5.0 * i for i in range(n)], temp_c=[float(v) for v in temps])


DEGENERATE = {
    "no rise, flat": (flat(10, 40.0), flat(180, 40.0), flat(180, 40.0)),
    "no rise, noisy": (flat(60, 40.0, 1.0), flat(180, 40.0, 1.0), flat(180, 40.0, 1.0)),
    "2 points": (flat(2), flat(2), flat(2)),
    "empty": (Phase(), Phase(), Phase()),
}


@pytest.mark.parametrize("phases", DEGENERATE.values(), ids=DEGENERATE.keys())
def test_degenerate_inputs_give_none_and_a_note(phases):
    summary = analyse(*phases)
    assert summary.tau_heat_s is None
    assert summary.tau_cool_s is None
    assert summary.rise_90_s is None
    assert summary.degrees_per_watt is None
    assert summary.notes


def test_empty_run_is_all_none():
    summary = analyse(Phase(), Phase(), Phase())
    for key in ("bench_s", "idle_temp_c", "peak_temp_c", "steady_temp_c", "throttle_share",
                "sm_clock_drop_pct", "mean_power_w", "idle_power_w"):
        assert getattr(summary, key) is None, key


def test_no_rise_keeps_what_can_be_measured():
    summary = analyse(*DEGENERATE["no rise, flat"])
    assert summary.steady_temp_c == 40.0
    assert summary.idle_temp_c == 40.0
    assert summary.peak_temp_c == 40.0
    assert any("no heating fit" in note for note in summary.notes)


def test_a_rise_too_slow_to_saturate_falls_back_to_the_measured_tail():
    t = [5.0 * i for i in range(60)]
    bench = Phase(t_s=t, temp_c=[40 + 0.1 * x for x in t])  # a straight ramp: no first order
    summary = analyse(flat(10, 40.0), bench, Phase())
    assert summary.tau_heat_s is None
    assert summary.steady_temp_c == pytest.approx(np.mean([40 + 0.1 * x for x in t[-12:]]),
                                                  rel=0.02)


def test_clock_power_and_throttle_figures():
    n = 100
    t = [5.0 * i for i in range(n)]
    idle = Phase(t_s=[-50.0, -45.0], temp_c=[35, 35], power_w=[50.0, 50.0],
                 sm_mhz=[300.0, 300.0])
    bench = Phase(
        t_s=t,
        temp_c=[70 - 35 * math.exp(-x / 90) for x in t],
        power_w=[250.0] * n,
        sm_mhz=[1500.0] * 70 + [1350.0] * 30,
        throttle={"hw_thermal": [False] * 70 + [True] * 30,
                  "sw_power_cap": [None] * 50 + [True] * 25 + [False] * 25,
                  "sync_boost": [None] * n},
    )
    summary = analyse(idle, bench, Phase())
    assert summary.sm_clock_drop_pct == pytest.approx(10.0)
    assert summary.mean_power_w == 250.0
    assert summary.idle_power_w == 50.0
    assert summary.throttle_share == {"hw_thermal": 0.3, "sw_power_cap": 0.5}
    assert summary.degrees_per_watt == pytest.approx(35 / 200, rel=0.02)


def test_degrees_per_watt_needs_a_power_change():
    idle = Phase(t_s=[-10.0, -5.0], temp_c=[35, 35], power_w=[100.0, 100.0])
    t = [5.0 * i for i in range(100)]
    bench = Phase(t_s=t, temp_c=[70 - 35 * math.exp(-x / 90) for x in t],
                  power_w=[100.5] * 100)
    assert analyse(idle, bench, Phase()).degrees_per_watt is None
    no_idle_power = Phase(t_s=[-10.0, -5.0], temp_c=[35, 35])
    assert analyse(no_idle_power, bench, Phase()).degrees_per_watt is None


def test_throttle_share_is_none_when_no_reason_is_reported():
    assert throttle_share(Phase(t_s=[0.0], throttle={"hw_thermal": [None]})) is None


def test_a_short_cooldown_says_its_tau_is_uncertain():
    idle, bench, cool = synthetic_run(step_s=5, noise_sd=1.0, cool_s=300)
    summary = analyse(idle, bench, cool)
    assert any("tau_cool_s is uncertain" in note for note in summary.notes)
