"""Worker lifecycle: stopping Apache must not leave customer workers behind."""
from __future__ import annotations

import pytest

import harness


@pytest.mark.parametrize("mpm", harness.MPMS)
def test_stop_leaves_no_workers_or_supervisor(site, sufcgi_module, mpm):
    a = harness.Apache(mpm=mpm, vhosts=site.vhosts())
    lifecycle = site.alice.www / "lifecycle"
    try:
        a.start()
        r = a.get("/lifecycle/", host=site.ALICE)
        assert r.status == 200, (r, a.log_tail(10))
        worker = r.json()["pid"]
        assert worker in harness.processes_with_cwd_under(lifecycle)
        before_stop = set(a.all_descendants())
        assert worker in before_stop or harness.proc_uid(worker) == site.alice.uid
    finally:
        a.stop()
    # a.stop() waited for the master and gave the rest 5 s before killing leftovers
    assert a.leftovers == [], (f"processes still alive after Apache stopped (killed by the harness): "
                               f"{a.leftovers}")
    assert not harness.pid_alive(worker), f"worker {worker} outlived Apache"
    a.cleanup()
