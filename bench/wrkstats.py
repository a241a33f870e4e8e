"""Reading wrk 4.x results: undo its coordinated-omission correction.

wrk 4.x records one latency sample per request (time from writing the request
to the end of its response, in whole microseconds, into a histogram indexed by
microseconds). Before printing, main() calls

    stats_correct(latency, expected)   with expected = runtime_us / (requests / connections)

which, for every bin n >= 2*expected holding c samples, adds c synthetic samples
to each bin n - k*expected that is still > expected (k = 1, 2, ...). The bins it
reads are never ones it has already written (it only writes below n while
walking n upwards), so the original histogram comes back exactly by walking
from the top down:  orig[n] = corrected[n] - sum over k>=1 of orig[n + k*expected]
(for n > expected; bins <= expected are untouched).

`latency.lua` dumps the corrected histogram; `per_request()` inverts it and
checks the result against wrk's own request count, so a wrk whose correction
differs from the above is detected instead of silently misreported.
"""
from __future__ import annotations

PERCENTILES = (50.0, 90.0, 99.0, 99.9)


def expected_interval(duration_us: int, requests: int, connections: int) -> int | None:
    """wrk's integer arithmetic: runtime_us / (complete / connections)."""
    per_conn = requests // connections
    if per_conn <= 0:
        return None
    return duration_us // per_conn


def uncorrect(hist: dict[int, int], expected: int | None) -> dict[int, int]:
    """Original histogram from the corrected one (see module docstring)."""
    if not expected:
        return dict(hist)
    orig: dict[int, int] = {}
    pending: dict[int, int] = {}   # bin -> synthetic samples the correction added there
    for n in sorted(hist, reverse=True):
        c = hist[n] - pending.pop(n, 0)
        if c < 0:
            raise ValueError(f"histogram does not invert at {n} us (wrk correction differs?)")
        if c:
            orig[n] = c
            if n >= 2 * expected:
                m = n - expected
                while m > expected:
                    pending[m] = pending.get(m, 0) + c
                    m -= expected
    leftover = {k: v for k, v in pending.items() if v}
    if leftover:
        raise ValueError(f"synthetic samples in empty bins: {sorted(leftover)[:5]}...")
    return orig


def percentile(hist: dict[int, int], p: float) -> int:
    """Same rank rule as wrk's stats_percentile: rank = round(p/100 * count + 0.5)."""
    count = sum(hist.values())
    if count == 0:
        return 0
    # C round() is half away from zero; values here are positive.
    rank = int(p / 100.0 * count + 0.5 + 0.5)
    total = 0
    for v in sorted(hist):
        total += hist[v]
        if total >= rank:
            return v
    return max(hist)


def summarize(hist: dict[int, int]) -> dict:
    count = sum(hist.values())
    out = {"count": count,
           "mean_us": round(sum(v * c for v, c in hist.items()) / count, 1) if count else 0.0,
           "max_us": max(hist) if hist else 0}
    for p in PERCENTILES:
        out[f"p{p:g}_us"] = percentile(hist, p)
    return out


def per_request(raw: dict, connections: int) -> dict:
    """From latency.lua's output: per-request (uncorrected) and wrk's corrected stats."""
    corrected = {int(v): int(c) for v, c in raw["corrected_hist"]}
    if raw["corrected_hist_total"] != raw["corrected"]["count"]:
        raise ValueError("histogram dump does not add up to wrk's sample count")
    expected = expected_interval(raw["duration_us"], raw["requests"], connections)
    orig = uncorrect(corrected, expected)
    recorded = raw["requests"] - raw["errors"]["timeout"]
    if sum(orig.values()) != recorded:
        raise ValueError(f"inverted histogram holds {sum(orig.values())} samples, "
                         f"wrk recorded {recorded}")
    return {
        "expected_interval_us": expected,
        "per_request": summarize(orig),
        "wrk_corrected": summarize(corrected),
        "synthetic_samples": sum(corrected.values()) - sum(orig.values()),
    }
