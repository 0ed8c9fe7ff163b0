"""`embed serve --processes`: how the front processes are looked after (kept light: each front
process started here imports this module, so it imports little)."""

from __future__ import annotations

import multiprocessing
import os
import socket
import time

from embedder.service.processes import (
    OWNER_FILE,
    PRIVATE_PREFIX,
    Fronts,
    restart_delay,
    sweep_private_folders,
)


def _fail_at_start(spec, sock) -> None:
    os._exit(3)   # a front that cannot start (its model will not load, its port is refused...)


def test_restart_waits_longer_after_each_young_death():
    assert restart_delay(0) == 0.0          # one that served a while is replaced at once
    delays = [restart_delay(k) for k in range(1, 12)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0]
    assert delays == sorted(delays) and max(delays) == 30.0


def test_a_front_that_cannot_start_is_tried_again_later_and_later(capfd):
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    fronts = Fronts(spec=None, sock=sock, n=1, run=_fail_at_start)
    try:
        fronts.start()
        time.sleep(4)
    finally:
        fronts.stop()
        sock.close()
    log = capfd.readouterr().err
    # tried at once, then after 0.5 s and 1 s (and 2 s): not the dozen starts of restarting at once
    assert "ended (3); starting another in 0.5 s" in log and "starting another in 1 s" in log, log
    assert 3 <= fronts.starts <= 5, (fronts.starts, log)
    assert all(p.exitcode is not None for p in fronts.procs)
    n = fronts.starts
    time.sleep(1.5)
    assert fronts.starts == n   # none started after stop


def test_a_killed_servers_private_folder_is_swept_and_nothing_else(tmp_path):
    dead = multiprocessing.get_context("spawn").Process(target=os.getpid)
    dead.start()
    dead.join()
    folders = {}
    for name, owner in (("killed", str(dead.pid)), ("running", str(os.getpid())), ("unmarked", None),
                        ("garbled", "not a pid")):
        folders[name] = tmp_path / f"{PRIVATE_PREFIX}{name}"
        (folders[name] / "metrics").mkdir(parents=True)
        if owner is not None:
            (folders[name] / OWNER_FILE).write_text(owner)
    other = tmp_path / "not-ours"
    other.mkdir()
    (other / OWNER_FILE).write_text(str(dead.pid))

    assert sweep_private_folders(tmp_path) == [folders["killed"]]
    assert not folders["killed"].exists()
    assert all(folders[n].exists() for n in ("running", "unmarked", "garbled")) and other.exists()
