#!/usr/bin/python3
"""Print `deb-src` lines for every `deb` source this machine's apt is configured with.

The build fetches lighttpd's source package (lighttpd ships no headers) through an
apt sources list private to the build, so the system's apt configuration is never
touched. Its entries are the machine's own: a host with a local mirror, a snapshot
archive or a proxied URI gets the source package from there, never from a fixed
archive URL. Both formats apt reads are understood: one-line `.list` files and
deb822 `.sources` stanzas (`Enabled: no` stanzas are skipped). Options such as
`[signed-by=…]` are kept.

    apt-deb-src.py [ETC_APT_DIR]      (default /etc/apt)

Exit status 1, with a message, when no `deb` source is configured at all.
"""
from __future__ import annotations

import sys
from pathlib import Path


def one_line_entries(text: str) -> list[str]:
    """`deb [opts] URI SUITE COMPONENT…` lines as `deb-src …` lines."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if line.startswith("deb ") or line.startswith("deb\t"):
            out.append("deb-src" + line[3:])
    return out


def deb822_stanzas(text: str) -> list[dict[str, str]]:
    """Stanzas of a deb822 file as {field (lowercase): value}, continuation lines joined."""
    stanzas, cur, last = [], {}, None
    for raw in text.splitlines() + [""]:
        if raw.startswith("#"):
            continue
        if not raw.strip():
            if cur:
                stanzas.append(cur)
            cur, last = {}, None
            continue
        if raw[0] in " \t" and last is not None:
            cur[last] += "\n" + raw.strip()
            continue
        name, sep, value = raw.partition(":")
        if sep:
            last = name.strip().lower()
            cur[last] = value.strip()
    return stanzas


def deb822_entries(text: str) -> list[str]:
    out = []
    for st in deb822_stanzas(text):
        if "deb" not in st.get("types", "").split() or st.get("enabled", "yes").lower() == "no":
            continue
        opts = []
        if "signed-by" in st and "\n" not in st["signed-by"]:
            opts.append(f"signed-by={st['signed-by']}")
        if "architectures" in st:
            opts.append(f"arch={','.join(st['architectures'].split())}")
        prefix = f"deb-src [{' '.join(opts)}]" if opts else "deb-src"
        components = " ".join(st.get("components", "").split())
        for uri in st.get("uris", "").split():
            for suite in st.get("suites", "").split():
                out.append(f"{prefix} {uri} {suite} {components}".rstrip())
    return out


def entries(etc_apt: Path) -> list[str]:
    out = []
    main = etc_apt / "sources.list"
    if main.is_file():
        out += one_line_entries(main.read_text(errors="replace"))
    parts = etc_apt / "sources.list.d"
    if parts.is_dir():
        for f in sorted(parts.iterdir()):
            if f.suffix == ".list":
                out += one_line_entries(f.read_text(errors="replace"))
            elif f.suffix == ".sources":
                out += deb822_entries(f.read_text(errors="replace"))
    return out


def main() -> int:
    etc_apt = Path(sys.argv[1]) if len(sys.argv) > 1 else Path("/etc/apt")
    found = entries(etc_apt)
    if not found:
        print(f"apt-deb-src: no 'deb' source configured under {etc_apt}", file=sys.stderr)
        return 1
    print("\n".join(dict.fromkeys(found)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
