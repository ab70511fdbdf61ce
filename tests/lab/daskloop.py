"""A real Dask cluster on loopback (test and bench support): one
``dask scheduler`` and N ``dask worker`` processes started as a user
would, each worker without a nanny (a killed worker stays dead) and with
one thread, all able to import this checkout of crashext.

>>> c = LoopbackCluster("/tmp/x", workers=2); c.address   # doctest: +SKIP
'tcp://127.0.0.1:40211'
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def _dask_bin():
    b = os.path.join(os.path.dirname(sys.executable), "dask")
    return [b] if os.path.exists(b) else [sys.executable, "-m", "dask"]


class LoopbackCluster:
    """A real ``dask scheduler`` and ``workers`` ``dask worker`` processes
    on 127.0.0.1; :meth:`kill` one by name (``w1``, ``w2``, ...)."""

    def __init__(self, tmp: str, workers: int = 2) -> None:
        self.tmp = str(tmp)
        self.sched_file = os.path.join(self.tmp, "scheduler.json")
        env = dict(os.environ, PYTHONPATH=ROOT + os.pathsep
                   + os.environ.get("PYTHONPATH", ""))
        self.env = env
        self.procs = {}
        self.logs = []
        self.start("scheduler", ["scheduler", "--host", "127.0.0.1",
                                 "--port", "0", "--no-dashboard",
                                 "--scheduler-file", self.sched_file])
        for _ in range(300):
            if os.path.exists(self.sched_file) and \
                    os.path.getsize(self.sched_file):
                break
            time.sleep(0.1)
        with open(self.sched_file) as f:
            self.address = json.load(f)["address"]
        for k in range(1, workers + 1):
            n = "w%d" % k
            self.start(n, ["worker", "--scheduler-file", self.sched_file,
                           "--nthreads", "1", "--no-nanny", "--name", n,
                           "--no-dashboard", "--host", "127.0.0.1"])
        from distributed import Client
        with Client(self.address, timeout="30s") as c:
            c.wait_for_workers(workers, timeout=120)

    def start(self, name, args):
        log = open(os.path.join(self.tmp, name + ".log"), "w")
        self.logs.append(log)
        self.procs[name] = subprocess.Popen(
            _dask_bin() + args, stdout=log, stderr=subprocess.STDOUT,
            env=self.env, cwd=ROOT, start_new_session=True)

    def kill(self, name):
        p = self.procs[name]
        os.killpg(p.pid, signal.SIGKILL)
        p.wait(30)

    def close(self):
        for name, p in self.procs.items():
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in self.procs.values():
            try:
                p.wait(30)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
        for log in self.logs:
            log.close()
