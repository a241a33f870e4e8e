#!/usr/bin/python3
"""The code's shape, as issue 17 measures it: lines inside `unsafe` blocks (outside
the raw bindings), the largest source files, and import circles between the files
of one folder.

    /usr/bin/python3 bench/codeshape.py [--top 12] [--json]

Lines inside `unsafe { … }` blocks are counted once however deeply blocks nest
(an `unsafe fn`'s body is not a block: with `unsafe_op_in_unsafe_fn` denied, what
it does unsafely sits in blocks of its own). Strings, chars and comments are
skipped when matching braces. A file's imports are the sibling modules it names
through `super::NAME`, `self::NAME` in a `mod.rs`, or the folder's `crate::…::NAME`
path; a circle is a set of files of one folder that reach each other.
"""
from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parent.parent / "src"
GENERATED = {"ffi.rs"}   # raw bindgen output (include!) and its lint allows


def strip_code(text: str) -> str:
    """The text with comments, strings and char literals blanked (newlines kept)."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if text.startswith("//", i):
            j = text.find("\n", i)
            j = n if j < 0 else j
            out.append(" " * (j - i))
            i = j
        elif text.startswith("/*", i):
            depth, j = 1, i + 2
            while j < n and depth:
                if text.startswith("/*", j):
                    depth, j = depth + 1, j + 2
                elif text.startswith("*/", j):
                    depth, j = depth - 1, j + 2
                else:
                    j += 1
            out.append(re.sub(r"[^\n]", " ", text[i:j]))
            i = j
        elif c == "r" and re.match(r'r#*"', text[i:i + 40]) and (i == 0 or not (text[i - 1].isalnum() or text[i - 1] == "_")):
            hashes = re.match(r'r(#*)"', text[i:]).group(1)
            end = text.find('"' + hashes, i + 2 + len(hashes))
            end = n if end < 0 else end + 1 + len(hashes)
            out.append(re.sub(r"[^\n]", " ", text[i:end]))
            i = end
        elif c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(re.sub(r"[^\n]", " ", text[i:j + 1]))
            i = j + 1
        elif c == "'" and re.match(r"'(\\.|[^\\'\n])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12]):
            m = re.match(r"'(\\.|[^\\'\n])'|'\\u\{[0-9a-fA-F]+\}'|'\\x[0-9a-fA-F]{2}'", text[i:i + 12])
            out.append(" " * len(m.group(0)))
            i += len(m.group(0))
        else:
            out.append(c)
            i += 1
    return "".join(out)


def unsafe_lines(text: str) -> set[int]:
    """Line numbers (1-based) inside `unsafe { … }` blocks."""
    code = strip_code(text)
    lines: set[int] = set()
    for m in re.finditer(r"\bunsafe\s*\{", code):
        start = m.end() - 1
        depth, j = 0, start
        while j < len(code):
            if code[j] == "{":
                depth += 1
            elif code[j] == "}":
                depth -= 1
                if depth == 0:
                    break
            j += 1
        first = code.count("\n", 0, m.start()) + 1
        last = code.count("\n", 0, j) + 1
        lines.update(range(first, last + 1))
    return lines


def module_name(f: Path) -> str:
    return f.parent.name if f.name == "mod.rs" else f.stem


def folder_path(folder: Path) -> str:
    """`crate::core::supervisor` for src/core/supervisor."""
    rel = folder.relative_to(SRC)
    return "::".join(["crate", *rel.parts]) if rel.parts else "crate"


def imports(f: Path, siblings: set[str]) -> set[str]:
    code = strip_code(f.read_text())
    me = module_name(f)
    found: set[str] = set()
    prefixes = ["super::"] if f.name != "mod.rs" else ["self::"]
    prefixes.append(folder_path(f.parent) + "::")
    for p in prefixes:
        for m in re.finditer(re.escape(p) + r"\{([^}]*)\}|" + re.escape(p) + r"(\w+)", code):
            names = [m.group(2)] if m.group(2) else [w.strip().split("::")[0] for w in m.group(1).split(",")]
            found.update(n for n in names if n in siblings and n != me)
    return found


def circles() -> list[list[str]]:
    out = []
    folders = {p.parent for p in SRC.rglob("*.rs")}
    for folder in sorted(folders):
        files = [f for f in folder.glob("*.rs") if f.name not in GENERATED and f.name != "mod.rs"]
        sib = {module_name(f) for f in files}
        graph = {module_name(f): imports(f, sib) for f in files}
        # strongly connected components (Tarjan)
        index, low, stack, on, comps, counter = {}, {}, [], set(), [], [0]

        def visit(v):
            index[v] = low[v] = counter[0]
            counter[0] += 1
            stack.append(v)
            on.add(v)
            for w in graph.get(v, ()):
                if w not in index:
                    visit(w)
                    low[v] = min(low[v], low[w])
                elif w in on:
                    low[v] = min(low[v], index[w])
            if low[v] == index[v]:
                comp = []
                while True:
                    w = stack.pop()
                    on.discard(w)
                    comp.append(w)
                    if w == v:
                        break
                if len(comp) > 1:
                    comps.append(sorted(comp))

        sys.setrecursionlimit(10000)
        for v in sorted(graph):
            if v not in index:
                visit(v)
        rel = folder.relative_to(SRC)
        out += [[f"{rel}/{c}.rs" for c in comp] for comp in comps]
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--top", type=int, default=12)
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    files = sorted(p for p in SRC.rglob("*.rs"))
    per_file, sizes = {}, {}
    for f in files:
        text = f.read_text()
        sizes[str(f.relative_to(SRC.parent))] = text.count("\n")
        if f.name in GENERATED:
            continue
        n = len(unsafe_lines(text))
        if n:
            per_file[str(f.relative_to(SRC.parent))] = n
    result = {
        "unsafe_block_lines_outside_ffi": sum(per_file.values()),
        "unsafe_block_lines_by_file": dict(sorted(per_file.items(), key=lambda kv: -kv[1])),
        "largest_files": dict(sorted(sizes.items(), key=lambda kv: -kv[1])[:args.top]),
        "import_circles": circles(),
    }
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"lines inside unsafe blocks outside ffi.rs: {result['unsafe_block_lines_outside_ffi']}")
    for f, n in result["unsafe_block_lines_by_file"].items():
        print(f"  {n:5d}  {f}")
    print(f"largest source files (lines):")
    for f, n in result["largest_files"].items():
        print(f"  {n:5d}  {f}")
    print(f"import circles between files of one folder: {len(result['import_circles'])}")
    for c in result["import_circles"]:
        print("  " + " <-> ".join(c))
    return 0


if __name__ == "__main__":
    sys.exit(main())
