"""The CGI environment sufcgi gives an app, compared with mod_proxy_fcgi's.

The SAME env-dumping app (tests/apps/env.c, libfcgi: it reports exactly the
FastCGI params it got, nothing added) runs twice on the same port, vhost and
document root: once as a standalone FastCGI server behind stock
mod_proxy_fcgi, once mounted with `SuFcgiApp envc` in <docroot>/cmp/.

Deliberate mapping fix-up on the proxy side: Apache's own mapping for a
handler on a directory makes the first *missing* path segment the script
(/cmp/hello/x -> SCRIPT_NAME=/cmp/hello, PATH_INFO=/x). sufcgi mounts the
whole directory as one app (SCRIPT_NAME=/cmp, PATH_INFO=/hello/x), so the
proxy side sets SCRIPT_NAME/PATH_INFO/PATH_TRANSLATED with
ProxyFCGISetEnvIf to what Apache would compute for that mount. Every other
key is stock mod_proxy_fcgi behaviour.
"""
from __future__ import annotations

import base64


import harness
from site_layout import HTPASSWD_PASSWORD, HTPASSWD_USER

COMPARED_KEYS = [
    "SCRIPT_NAME", "PATH_INFO", "PATH_TRANSLATED", "QUERY_STRING", "REQUEST_URI",
    "REQUEST_METHOD", "HTTPS", "REMOTE_USER", "AUTH_TYPE", "CONTENT_TYPE", "CONTENT_LENGTH",
    "SERVER_NAME", "SERVER_PORT", "SERVER_PROTOCOL", "GATEWAY_INTERFACE", "REMOTE_ADDR",
    "DOCUMENT_ROOT",
]
# Keys that may legitimately differ, with the reason (none so far).
DELIBERATE_DIFFERENCES: dict[str, str] = {}

AUTH = "Basic " + base64.b64encode(f"{HTPASSWD_USER}:{HTPASSWD_PASSWORD}".encode()).decode()

REQUESTS = [
    ("GET", "/cmp/hello/x?q=1&r=a%20b", {"X-Custom-Header": "v1", "Accept": "text/plain",
                                          "User-Agent": "sufcgi-tests/1"}, None),
    ("GET", "/cmp/caf%C3%A9/deep/er/", {}, None),
    ("POST", "/cmp/form?x=y", {"Content-Type": "application/x-www-form-urlencoded"}, b"a=1&b=2"),
    ("PUT", "/cmp/item/3", {"Content-Type": "application/json"}, b'{"k": "v"}'),
    ("DELETE", "/cmp/item/3", {}, None),
    ("GET", "/cmp/private/area?z", {"Authorization": AUTH}, None),
]


def _proxy_extra(site, sock) -> str:
    cmp = site.alice.www / "cmp"
    return (f'  <Directory {cmp}>\n'
            f'    SetHandler "proxy:unix:{sock}|fcgi://localhost"\n'
            f'    ProxyFCGISetEnvIf "true" SCRIPT_NAME "/cmp"\n'
            f'    ProxyFCGISetEnvIf "%{{REQUEST_URI}} =~ m#^/cmp(/.*)$#" PATH_INFO "$1"\n'
            f'    ProxyFCGISetEnvIf "%{{REQUEST_URI}} =~ m#^/cmp(/.*)$#" PATH_TRANSLATED '
            f'"%{{DOCUMENT_ROOT}}$1"\n'
            f'  </Directory>\n')


def _vhosts(site, allow_override: str, extra: str):
    out = []
    for v in site.vhosts():
        if v.name in (site.MAIN, site.ALICE):
            v.allow_override = allow_override
            if v.name == site.ALICE:
                v.extra += "\n" + extra
            out.append(v)
    return out


def _collect(apache: harness.Apache) -> list[dict]:
    envs = []
    for method, path, headers, body in REQUESTS:
        r = apache.get(path, host="alice.test", method=method, headers=dict(headers), body=body)
        assert r.status == 200, (f"{method} {path} -> {r.status}\n{r.body[:300]!r}\n"
                                 f"--- error log ---\n{apache.log_tail()}")
        envs.append(r.json())
    return envs


def _proxy_envs(site, port) -> list[dict]:
    sock = site.base / "cmp-proxy.sock"
    cmpdir = site.alice.www / "cmp"
    app = harness.StandaloneFcgi([str(cmpdir / "envc")], sock, owner=site.alice.ids, cwd=cmpdir)
    a = harness.Apache(mpm="event", port=port, sufcgi=False,
                       vhosts=_vhosts(site, "None", _proxy_extra(site, sock)))
    try:
        a.start()
        return _collect(a)
    finally:
        a.stop()
        app.stop()
        a.cleanup()


def test_proxy_side_mapping_is_the_mount_mapping(site):
    """Harness self-check (no sufcgi needed): the proxy reference really is the mount."""
    env = _proxy_envs(site, harness.free_port())[0]["env"]
    assert env["SCRIPT_NAME"] == "/cmp"
    assert env["PATH_INFO"] == "/hello/x"
    assert env["PATH_TRANSLATED"] == str(site.alice.www) + "/hello/x"


def test_cgi_environment_matches_mod_proxy_fcgi(site, sufcgi_module):
    port = harness.free_port()
    proxied = _proxy_envs(site, port)
    a = harness.Apache(mpm="event", port=port, sufcgi=True, vhosts=_vhosts(site, "All", ""))
    try:
        a.start()
        ours = _collect(a)
    finally:
        a.stop()
    problems = []
    for (method, path, _, _), p, s in zip(REQUESTS, proxied, ours):
        assert s["uid"] == site.alice.uid, f"{method} {path}: sufcgi app ran as uid {s['uid']}"
        pe, se = p["env"], s["env"]
        keys = set(COMPARED_KEYS) | {k for k in pe if k.startswith("HTTP_")} | \
            {k for k in se if k.startswith("HTTP_")}
        for k in sorted(keys):
            if k in DELIBERATE_DIFFERENCES:
                continue
            if pe.get(k) != se.get(k):
                problems.append(f"{method} {path}: {k}: mod_proxy_fcgi={pe.get(k)!r} "
                                f"sufcgi={se.get(k)!r}")
    assert not problems, "CGI environment differs from mod_proxy_fcgi:\n" + "\n".join(problems)
