"""`make bench`'s `notes` extra (issue 18): the sufcgi-* request notes cost
nothing measurable when no LogFormat uses them.

Three Apaches (event MPM, the bench sizing) serve the same hello app
(`/su/hello.fcgi`, the bench user's pool), differing only in the notes:

- `off`: `SuFcgiRequestNotes off`: the baseline (nothing is looked at or set);
- `auto`: the harness's own LogFormat, which names no sufcgi note, so
  `SuFcgiRequestNotes auto` sets none (the default configuration): what
  "no LogFormat uses them" costs, against `off`;
- `on`: `SuFcgiRequestNotes on`: all four notes set on every request (the
  worker's CPU time read from /proc before and after) though no format uses them;
- `used`: a CustomLog that writes all four.

wrk (16 connections) on each for DURATION seconds, ROUNDS rounds, the order
rotated every round so drift hits all alike. Reported: req/s per variant
(median, min–max) and the per-round ratios to `off` (median, min–max). A/B
in one run, on one build.
"""
from __future__ import annotations

import harness

ROUNDS = 6
DURATION = 5
CONNS = 16
PATH = "/su/hello.fcgi"
NOTES = ("sufcgi-queue-ms", "sufcgi-worker-pid", "sufcgi-worker-cpu-ms", "sufcgi-pool")
VARIANTS = ("off", "auto", "on", "used")


def _extra(kind: str, root) -> str:
    if kind == "off":
        return "SuFcgiRequestNotes off"
    if kind == "on":
        return "SuFcgiRequestNotes on"
    if kind == "used":
        fmt = "%h %t %>s " + " ".join(f"%{{{n}}}n" for n in NOTES)
        return f'LogFormat "{fmt}" notes\nCustomLog {root}/notes.log notes'
    return ""


def _median(xs: list[float]) -> float:
    s = sorted(xs)
    n = len(s)
    return (s[n // 2] + s[(n - 1) // 2]) / 2 if n else float("nan")


def run(b, site, tmp, gate) -> dict:
    vhost = harness.Vhost("bench.test", site.www)
    servers = {}
    try:
        for kind in VARIANTS:
            a = b.BenchApache(mpm="event", port=harness.free_port(), sufcgi=True, vhosts=[vhost], log_level="warn")
            a.extra = _extra(kind, a.root)
            a.start()
            servers[kind] = a
            for _ in range(20):
                r = a.get(PATH, host="bench.test")
                if r.status != 200:
                    raise harness.HarnessError(f"notes/{kind}: GET {PATH} -> {r}\n{a.log_tail(10)}")
        rps: dict[str, list[float]] = {k: [] for k in VARIANTS}
        busy = []
        for rnd in range(ROUNDS):
            gate.wait()
            order = VARIANTS[rnd % len(VARIANTS):] + VARIANTS[:rnd % len(VARIANTS)]
            for kind in order:
                r = b.measure(lambda: b.run_wrk(servers[kind].port, PATH, CONNS, DURATION, tmp), None, gate)
                rps[kind].append(r["req_per_s"])
                busy += r.get("busy_during", [])
            b.log(f"  notes round {rnd + 1}: " + ", ".join(f"{k} {rps[k][-1]:.0f} req/s" for k in VARIANTS))
        used_log = servers["used"].root / "notes.log"
        sample = used_log.read_text().splitlines()[-1] if used_log.exists() else ""
    finally:
        for a in servers.values():
            a.stop()
            a.cleanup()
    out = {"rounds": ROUNDS, "duration_s": DURATION, "connections": CONNS, "path": PATH, "busy_during": sorted(set(busy)),
           "used_log_line": sample}
    for k in VARIANTS:
        out[k] = {"median": round(_median(rps[k]), 1), "min": min(rps[k]), "max": max(rps[k]), "all": rps[k]}
    for k in ("auto", "on", "used"):
        ratios = [x / y for x, y in zip(rps[k], rps["off"]) if y]
        out[f"{k}_vs_off"] = {"median": round(_median(ratios), 3), "min": round(min(ratios), 3), "max": round(max(ratios), 3)}
    b.log(f"  notes: auto/off {out['auto_vs_off']}, on/off {out['on_vs_off']}, used/off {out['used_vs_off']}")
    return out


def markdown(r: dict) -> str:
    cell = lambda k: f"{r[k]['median']:.0f} req/s ({r[k]['min']:.0f}–{r[k]['max']:.0f})"  # noqa: E731
    ratio = lambda k: f"{r[k]['median']:.3f} ({r[k]['min']:.3f}–{r[k]['max']:.3f})"  # noqa: E731
    return (f"| request notes, {r['rounds']} × {r['duration_s']} s rounds, c{r['connections']}: `off` / "
            f"none used (`auto`) / set but unused (`on`) / logged (`used`) | {cell('off')} / {cell('auto')} / "
            f"{cell('on')} / {cell('used')}; ÷ off: auto {ratio('auto_vs_off')}, on {ratio('on_vs_off')}, "
            f"used {ratio('used_vs_off')} | auto ÷ off ≈ 1 |")
