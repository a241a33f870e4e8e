#!/usr/bin/python3
"""`make demo`: the htaccess examples served by Apache (event MPM) with mod_sufcgi.

Creates the user `sufcgi-demo`, copies htaccess-examples/* into its docroot
(compiling the C example), starts Apache on 127.0.0.1:8080 and prints the URLs.
Runs until Ctrl-C; with --check it requests each example once, prints the
answers and stops (exit status 1 if any example did not answer 200).
Must run as root (useradd, and Apache starts as root to switch users).
"""
from __future__ import annotations

import argparse
import os
import shutil
import signal
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import harness  # noqa: E402

EXAMPLES = harness.REPO / "htaccess-examples"
DEMO_USER, DEMO_UID = "sufcgi-demo", 2010
DEMO_CREDENTIALS = {"Authorization": "Basic ZGVtbzpkZW1v"}  # demo:demo, in the example's .htusers
# (label, path, request headers, expected status) requested by --check, in the order printed.
CHECKS = [
    ("php", "/php/index.php", None, 200),
    ("flask-wsgi", "/flask-wsgi/", None, 200),
    ("flask-wsgi route", "/flask-wsgi/hello/you", None, 200),
    ("flask-wsgi static", "/flask-wsgi/static/style.css", None, 200),
    ("perl", "/perl/hello.fcgi", None, 200),
    ("c", "/c/hello.fcgi", None, 200),
    ("authorizer, no login", "/authorizer/private.txt", None, 401),
    ("authorizer, demo:demo", "/authorizer/private.txt", DEMO_CREDENTIALS, 200),
    ("authorizer, public/", "/authorizer/public/hello.txt", None, 200),
]


def install_examples(user: harness.User) -> Path:
    """Copy the examples into the user's docroot with the owner and modes sufcgi demands."""
    www = user.www
    for src in sorted(EXAMPLES.iterdir()):
        if not src.is_dir():
            continue
        dest = www / src.name
        if dest.exists():
            shutil.rmtree(dest)
        for dirpath, _dirs, files in os.walk(src):
            rel = Path(dirpath).relative_to(src)
            harness.mkdir(dest / rel, user.ids, 0o755)
            for name in files:
                s = Path(dirpath) / name
                mode = 0o755 if os.access(s, os.X_OK) else 0o644
                harness.put(dest / rel / name, s.read_bytes(), user.ids, mode)
    c_dir = www / "c"
    if (c_dir / "hello.c").exists():
        harness.compile_c_app(c_dir / "hello.c", c_dir / "hello.fcgi", user.ids)
    links = "\n".join(f'<li><a href="{p}">{label}</a></li>' for label, p, _, _ in CHECKS)
    harness.put(www / "index.html",
                f"<!doctype html><title>sufcgi demo</title><h1>sufcgi demo</h1><ul>{links}</ul>\n",
                user.ids)
    return www


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--check", action="store_true", help="request each example once, then stop")
    ap.add_argument("--port", type=int, default=8080)
    ap.add_argument("--mpm", default="event", choices=harness.MPMS)
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("demo.py must run as root", file=sys.stderr)
        return 2
    try:
        harness.require_module()
    except harness.ModuleMissing as e:
        print(e, file=sys.stderr)
        return 2
    if harness.port_open(args.port):
        print(f"127.0.0.1:{args.port} is already in use", file=sys.stderr)
        return 2

    user = harness.ensure_user(DEMO_USER, DEMO_UID)
    www = install_examples(user)
    root = Path(tempfile.mkdtemp(prefix="sufcgi-demo-"))
    apache = harness.Apache(mpm=args.mpm, port=args.port, root=root,
                            vhosts=[harness.Vhost("localhost", www)])
    base = f"http://127.0.0.1:{args.port}"
    try:
        apache.start()
        print(f"sufcgi demo: Apache ({args.mpm} MPM) on {base}, docroot {www}, owner {DEMO_USER}")
        print(f"error log: {apache.error_log}")
        for label, path, _, _ in CHECKS:
            print(f"  {label:<22} {base}{path}")
        if args.check:
            failed = 0
            for label, path, headers, expected in CHECKS:
                try:
                    r = apache.get(path, host="localhost", headers=headers)
                    status, text = r.status, r.body.decode(errors="replace").strip()
                except OSError as e:
                    status, text = "ERR", str(e)
                failed += status != expected
                print(f"--- {label}: GET {path} -> {status} (expected {expected})")
                print("    " + "\n    ".join(text.splitlines()[:4]))
            if failed:
                print(f"{failed} example(s) failed; last error-log lines:\n{apache.log_tail(20)}")
            return 1 if failed else 0
        print("Ctrl-C to stop.")
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
        while True:
            signal.pause()
    except KeyboardInterrupt:
        return 0
    finally:
        apache.stop()
        print("Apache stopped.")


if __name__ == "__main__":
    sys.exit(main())
