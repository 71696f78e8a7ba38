"""EngineKeeper: the serving master starts an engine process that exited again, at its address
with its key, pausing longer while restarts keep failing; stopping the server ends them all."""

from __future__ import annotations

import subprocess
import sys
import time

from prometheus_client import REGISTRY
from test_worker import wait_until

from smartcloset import engine_ipc


def _sleeper(seconds: float) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", f"import time; time.sleep({seconds})"])


def test_an_exited_engine_is_started_again_where_the_server_processes_look(monkeypatch):
    calls: list[tuple] = []
    failures = [RuntimeError("the engine process exited with code 1")]  # the first restart fails

    def start(values, timeout_s=300.0, address=None, authkey=None, stop_at_exit=True):
        calls.append((address, authkey, stop_at_exit, time.monotonic()))
        if failures:
            raise failures.pop()
        return address, authkey, _sleeper(60)

    monkeypatch.setattr(engine_ipc, "start_engine_process", start)
    gone = subprocess.Popen([sys.executable, "-c", "raise SystemExit(75)"])  # as a lost GPU ends it
    stays = _sleeper(60)
    keeper = engine_ipc.EngineKeeper(
        {"engines": 2}, [("/tmp/a.sock", "k0", gone), ("/tmp/b.sock", "k1", stays)], backoff_s=0.1, backoff_max_s=1.0
    )
    restarts_before = REGISTRY.get_sample_value("smartcloset_engine_restarts_total") or 0.0
    t0 = time.monotonic()
    keeper.start()
    try:
        assert wait_until(lambda: keeper.restarts[0] == 1, timeout=20)
        assert keeper.restarts == [1, 0]  # the running one is left alone
        assert REGISTRY.get_sample_value("smartcloset_engine_restarts_total") == restarts_before + 1
        assert [c[:3] for c in calls] == [("/tmp/a.sock", "k0", False)] * 2  # same address and key, twice
        # The first try after a pause of 0.1 s, the second after twice that.
        assert calls[0][3] - t0 >= 0.1 and calls[1][3] - calls[0][3] >= 0.2
        restarted = keeper.process(0)
        assert restarted.poll() is None and restarted is not gone
    finally:
        keeper.stop()
    assert restarted.wait(10) is not None and stays.wait(10) is not None  # stopping ends every engine
    time.sleep(0.3)
    assert len(calls) == 2  # and none is started after


def test_only_the_process_that_made_it_stops_the_engines(monkeypatch):
    """gunicorn's workers are forked from the master and run its exit hooks too."""
    proc = _sleeper(60)
    keeper = engine_ipc.EngineKeeper({}, [("/tmp/a.sock", "k0", proc)])
    monkeypatch.setattr(engine_ipc.os, "getpid", lambda: -1)
    keeper.stop()
    assert proc.poll() is None
    monkeypatch.undo()
    keeper.stop()
    assert proc.wait(10) is not None
