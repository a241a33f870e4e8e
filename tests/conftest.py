"""Shared fixtures: the test site (users, docroots) and one Apache per MPM."""
from __future__ import annotations

import os
import shutil

import pytest

import harness
from site_layout import build_site


def pytest_configure(config):
    if os.geteuid() != 0:
        raise pytest.UsageError("the sufcgi integration suite must run as root "
                                "(it creates users and starts Apache)")


@pytest.fixture(scope="session", autouse=True)
def _no_sufcgi_cgroup_left():
    """At the end of the run no cgroup of any server this run started may be
    left (each server's stop checks its own; this catches the rest)."""
    yield
    left = [d for inst in sorted(harness.CGROUP_INSTANCES) for d in harness.sufcgi_cgroup_dirs(inst)]
    for d in left:
        harness.remove_cgroup_tree(d)
    assert not left, f"sufcgi cgroups left at the end of the run (removed now): {[str(d) for d in left]}"


@pytest.fixture(scope="session")
def site():
    s = build_site()
    yield s
    harness.kill_test_user_processes()
    shutil.rmtree(s.base, ignore_errors=True)


def _module_or_fail():
    """Tests needing mod_sufcgi fail (not skip) with a clear message when it is missing."""
    if not harness.MODULE_PATH.is_file():
        pytest.fail(f"{harness.MODULE_PATH} does not exist: build it with `make build` "
                    "(tests that need the sufcgi module fail until it is there)", pytrace=False)
    return harness.MODULE_PATH


@pytest.fixture(scope="session")
def sufcgi_module():
    return _module_or_fail()


@pytest.fixture(scope="module", params=harness.MPMS)
def apache(request, site):
    """Apache with mod_sufcgi and every test vhost, one per MPM (tests are grouped by MPM)."""
    _module_or_fail()
    # Crashes are reported per test by _crash_guard below.
    yield from harness.serve(request, harness.Apache(mpm=request.param, vhosts=site.vhosts()),
                             f"[{request.param}] ", fail_on_crash=False)


@pytest.fixture(scope="module", params=harness.SERVERS)
def server(request, site):
    """One server of each kind (Apache per MPM, lighttpd) with every test vhost."""
    _module_or_fail()
    if request.param == "lighttpd":
        _lighttpd_module_or_fail()
        s = harness.Lighttpd(vhosts=site.vhosts())
    else:
        s = harness.Apache(mpm=request.param, vhosts=site.vhosts())
    yield from harness.serve(request, s, f"[{request.param}] ", fail_on_crash=False)


def _lighttpd_module_or_fail():
    if not harness.LIGHTTPD_MODULE_PATH.is_file():
        pytest.fail(f"{harness.LIGHTTPD_MODULE_PATH} does not exist: build it with `make build`", pytrace=False)


@pytest.fixture(autouse=True)
def _crash_guard(request):
    """A crashed child or supervisor fails the test that caused it, and later tests on
    that server fail fast instead of hanging on a broken server."""
    # `server` is the shared fixture above only in suites that say so (others
    # have a per-test `server` of their own).
    shared = getattr(request.module, "SHARED_SERVER", False)
    name = "server" if shared and "server" in request.fixturenames else "apache"
    if name not in request.fixturenames:
        yield
        return
    a = request.getfixturevalue(name)
    earlier = a.crash_lines()
    if earlier:
        pytest.fail("this Apache already had crashed processes (see the first failing test):\n"
                    + "\n".join(earlier[:5]), pytrace=False)
    mark = a.log_mark()
    yield
    crashes = a.crash_lines(mark)
    if crashes:
        pytest.fail("processes crashed during this test:\n" + "\n".join(crashes[:5])
                    + f"\n--- error log since test start ---\n{a.log_since(mark)[-3000:]}",
                    pytrace=False)
