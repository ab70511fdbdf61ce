"""Drive a strict PyKdump stand-in: a crash session in its own interpreter
whose imports are exactly PyKdump's (tests/pykdump_standin/crashsim.py).

:class:`StrictCrash` offers the names the in-process stand-in module
offers (``standin_open``, ``standin_reset``, ``standin_command``,
``standin_epython``, ``standin_registrations``, ...), so a test reads the
same either way; behind them a child process runs each command as crash
would, on a real file descriptor.  :func:`run_batch` is ``crash -i CMDS``
with the output going to a file or a pipe.

>>> c = StrictCrash()                                   # doctest: +SKIP
>>> c.standin_open(vmlinux, vmcore, pykdumppath=[progs])
>>> c.standin_command("xa check ffff888006cbc938")      # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import shlex
import subprocess
import sys
import tempfile
from typing import List, Optional, Sequence

STANDIN = os.path.join(os.path.dirname(os.path.abspath(__file__)),
                       "pykdump_standin")
CRASHSIM = os.path.join(STANDIN, "crashsim.py")
#: Longest a command may run (a hang fails the test instead of CI).
TIMEOUT = 600


class StandinCrashExit(Exception):
    """crash itself would exit here (see crash.StandinCrashExit)."""

    def __init__(self, code, output=""):
        super().__init__("crash exited with status %r" % (code,))
        self.code = code
        self.output = output


class StandinError(RuntimeError):
    """The child died or broke the protocol."""


def extension() -> str:
    """The stand-in mpykdump.so (built once per content, cached)."""
    sys.path.insert(0, STANDIN)
    try:
        import pylib
    finally:
        sys.path.remove(STANDIN)
    h = hashlib.sha1(sys.version.encode())
    api = os.path.join(STANDIN, "pykdump")
    for f in sorted(os.listdir(api)) + ["../pylib.py"]:
        p = os.path.join(api, f)
        if p.endswith(".py"):
            with open(p, "rb") as fh:
                h.update(fh.read())
    d = os.path.join(tempfile.gettempdir(),
                     "crashext-standin-%s" % h.hexdigest()[:12])
    os.makedirs(d, exist_ok=True)
    so = os.path.join(d, "mpykdump.so")
    if not os.path.isfile(so):
        pylib.build_extension(so, api)
    return so


def bootstrap_path() -> List[str]:
    """Where drgn lives (for the stand-in's C side only)."""
    import drgn
    return [os.path.dirname(os.path.dirname(os.path.abspath(drgn.__file__)))]


def _argv(vmlinux, vmcore, pykdumppath, cmds=None) -> List[str]:
    a = [sys.executable, "-I", "-S", CRASHSIM, "--vmlinux", vmlinux,
         "--vmcore", vmcore, "--ext", extension(),
         "--pykdumppath", ":".join(pykdumppath),
         "--bootstrap", ":".join(bootstrap_path())]
    if cmds is not None:
        a += ["--cmds", cmds]
    return a


def run_batch(vmlinux: str, vmcore: str, lines: Sequence[str],
              pykdumppath: Sequence[str] = (), out: str = "pipe",
              workdir: Optional[str] = None,
              env: Optional[dict] = None) -> str:
    """``crash -i CMDS VMLINUX VMCORE`` with crash's output to a pipe
    (``out="pipe"``) or to a regular file (``out="file"``); returns
    that output."""
    workdir = workdir or tempfile.mkdtemp(prefix="crashsim-")
    cmds = os.path.join(workdir, "cmds")
    with open(cmds, "w") as f:
        f.write("\n".join(lines) + "\n")
    argv = _argv(vmlinux, vmcore, list(pykdumppath), cmds)
    if out == "file":
        path = os.path.join(workdir, "out")
        with open(path, "wb") as fo:
            subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=fo,
                           stderr=subprocess.STDOUT, cwd=workdir, env=env,
                           timeout=TIMEOUT, check=True)
        with open(path, "rb") as fi:
            return fi.read().decode("utf-8", "replace")
    p = subprocess.run(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                       stderr=subprocess.STDOUT, cwd=workdir, env=env,
                       timeout=TIMEOUT, check=True)
    return p.stdout.decode("utf-8", "replace")


class _Stats:
    """``crash.standin_stats`` of the child, fetched on demand."""

    def __init__(self, owner: "StrictCrash") -> None:
        self._o = owner
        self._data = {"counts": {}, "mem_calls": 0, "log": []}

    def reset(self) -> None:
        self._data = self._o._request("stats reset")

    @property
    def trace(self) -> bool:
        return False

    @trace.setter
    def trace(self, on: bool) -> None:
        self._data = self._o._request("stats trace" if on else
                                      "stats untrace")

    def fetch(self) -> "_Stats":
        self._data = self._o._request("stats get")
        return self

    def __getitem__(self, k):
        return self._data["counts"].get(k, 0)

    @property
    def mem_calls(self) -> int:
        return self._data["mem_calls"]

    @property
    def log(self):
        return [tuple(x) for x in self._data["log"]]


class StrictCrash:
    """A crash + PyKdump session in a strict child interpreter."""

    StandinCrashExit = StandinCrashExit

    def __init__(self, workdir: Optional[str] = None,
                 env: Optional[dict] = None) -> None:
        self.workdir = workdir or tempfile.mkdtemp(prefix="crashsim-")
        self.env = env
        self.proc: Optional[subprocess.Popen] = None
        self.dump = None
        self.last_status = None
        self.standin_stats = _Stats(self)
        self._buf = b""

    # -- the session
    def standin_open(self, vmlinux: str, vmcore: str,
                     pykdumppath: Sequence[str] = ()) -> None:
        """crash started on this dump with PYKDUMPPATH=pykdumppath."""
        self.standin_close()
        self.dump = (vmlinux, vmcore)
        self.proc = subprocess.Popen(
            _argv(vmlinux, vmcore, list(pykdumppath)),
            stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT, cwd=self.workdir, env=self.env)
        self._buf = b""

    def standin_reset(self, pykdumppath: Sequence[str] = ()) -> None:
        """As if crash had been started again (same dump)."""
        self._request("reset " + ":".join(pykdumppath))

    def standin_close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except Exception:
                self.proc.kill()
            self.proc = None

    # -- typing at the prompt
    def standin_command(self, line: str) -> str:
        """Type ``line`` at ``crash>``: what crash shows (status of the
        last xa run in ``last_status``)."""
        self._send(line)
        text, kind, arg = self._until(b"\0END ", b"\0EXIT ")
        if kind == b"\0EXIT ":
            self.proc.wait(timeout=30)
            self.proc = None
            raise StandinCrashExit(json.loads(arg), text)
        self.last_status = json.loads(arg)
        return text

    def standin_epython(self, script: str, *args: str) -> str:
        return self.standin_command(" ".join(
            ["epython", shlex.quote(str(script))]
            + [shlex.quote(str(a)) for a in args]))

    # -- driver requests
    def standin_registrations(self) -> dict:
        return {k: tuple(v) for k, v in self._request("registrations").items()}

    def standin_pending_output(self) -> str:
        """What sys.stdout's object holds unflushed (it is flushed now)."""
        self._send("!pending")
        before, _k, _a = self._until(b"\0PENDING\n")
        text, _k, _a = self._until(b"\0REPLY ")
        return before + text

    def standin_define_command(self, name: str, behaviour: str) -> None:
        """Emulate crash command ``name``: ``ok``, ``empty`` or
        ``fail:MESSAGE`` (see crashsim._request)."""
        self._request("define %s %s" % (name, behaviour))

    def standin_calls(self) -> List[str]:
        return self._request("calls")

    def setenv(self, var: str, value: Optional[str]) -> None:
        """Change os.environ inside the crash process."""
        if value is None:
            self._request("unsetenv " + var)
        else:
            self._request("setenv %s %s" % (var, value))

    # -- plumbing
    def _request(self, req: str):
        self._send("!" + req)
        _text, _k, arg = self._until(b"\0REPLY ")
        return json.loads(arg)

    def _send(self, line: str) -> None:
        if self.proc is None:
            raise StandinError("no crash session (standin_open first)")
        try:
            self.proc.stdin.write(line.encode() + b"\n")
            self.proc.stdin.flush()
        except BrokenPipeError:
            raise StandinError("crash stand-in died: %s"
                               % self._buf.decode("utf-8", "replace")[-2000:])

    def _until(self, *markers: bytes):
        """(text before the first marker, marker, its argument line)."""
        fd = self.proc.stdout.fileno()
        while True:
            for m in markers:
                i = self._buf.find(m)
                if i >= 0:
                    j = self._buf.find(b"\n", i + len(m))
                    if j >= 0 or m.endswith(b"\n"):
                        if m.endswith(b"\n"):
                            j = i + len(m) - 1
                            arg = b""
                        else:
                            arg = self._buf[i + len(m):j]
                        text = self._buf[:i].decode("utf-8", "replace")
                        self._buf = self._buf[j + 1:]
                        return text, m, arg.decode()
            r, _w, _x = select.select([fd], [], [], TIMEOUT)
            if not r:
                raise StandinError("crash stand-in: no answer in %d s"
                                   % TIMEOUT)
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                self.proc.wait(timeout=30)
                raise StandinError("crash stand-in exited (%s): %s" % (
                    self.proc.returncode,
                    self._buf.decode("utf-8", "replace")[-3000:]))
            self._buf += chunk

    def __del__(self):
        try:
            self.standin_close()
        except Exception:
            pass
