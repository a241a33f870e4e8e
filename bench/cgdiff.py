#!/usr/bin/python3
"""Ir per request from two callgrind dumps of the same server that differ only
in how many requests they served (bench/profile.py --requests A, then B):
(dump_B − dump_A) / (B − A), in total and per function (inclusive and self).

    bench/cgdiff.py SMALL.out A BIG.out B [--top 40] [--match REGEX]
"""
from __future__ import annotations

import argparse
import re
import subprocess
import sys

LINE = re.compile(r"^\s*([\d,]+)\s+\(\s*[\d.]+%\)\s+(.*)$")


def per_function(path: str, inclusive: bool) -> tuple[int, dict[str, int]]:
    cmd = ["callgrind_annotate", f"--inclusive={'yes' if inclusive else 'no'}",
           "--threshold=100", "--auto=no", path]
    text = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
    total, funcs = 0, {}
    for line in text.splitlines():
        if "PROGRAM TOTALS" in line:
            total = int(line.split()[0].replace(",", ""))
            continue
        m = LINE.match(line)
        if m:
            name = m.group(2).strip()
            # "file:function [object]" → "function [object]": sources differ by build path only.
            name = re.sub(r"^\S*?:(?=\S)", "", name, count=1) if not name.startswith("0x") else name
            funcs[name] = funcs.get(name, 0) + int(m.group(1).replace(",", ""))
    return total, funcs


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("small")
    ap.add_argument("a", type=int)
    ap.add_argument("big")
    ap.add_argument("b", type=int)
    ap.add_argument("--top", type=int, default=40)
    ap.add_argument("--match", default="", help="only functions matching this regex")
    ap.add_argument("--self", action="store_true", help="exclusive (self) cost instead of inclusive")
    args = ap.parse_args()
    n = args.b - args.a
    t1, f1 = per_function(args.small, not args.self)
    t2, f2 = per_function(args.big, not args.self)
    print(f"Ir per request: {(t2 - t1) / n:,.0f}   (totals {t1:,} / {t2:,}, {n} requests apart)")
    rows = []
    for k in set(f1) | set(f2):
        d = (f2.get(k, 0) - f1.get(k, 0)) / n
        if args.match and not re.search(args.match, k):
            continue
        rows.append((d, k))
    rows.sort(reverse=True)
    print(f"{'Ir/req':>10}  {'incl' if not args.self else 'self'}  function")
    for d, k in rows[: args.top]:
        print(f"{d:10,.0f}  {k[:150]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
