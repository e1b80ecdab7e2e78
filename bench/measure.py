"""Run one process and measure it from the outside, without touching its I/O.

- Wall time: monotonic clock around spawn .. exit.
- Peak RSS: ``ru_maxrss`` from ``wait4`` (the kernel's own high-water mark of the child,
  the same figure ``/usr/bin/time -v`` prints), cross-checked by sampling ``VmHWM`` from
  ``/proc/PID/status`` every 50 ms while it runs.
- Local disk writes: ``write_bytes`` (and ``cancelled_write_bytes``) from ``/proc/PID/io``,
  read after the process has exited but *before* it is reaped (``waitid(WEXITED|WNOWAIT)``
  leaves the zombie in place), so the figure covers the whole life of every thread.
  ``write_bytes`` counts page-cache pages dirtied for a block device, i.e. what would reach
  disk; writes to pipes/sockets and reads are not in it.
- Files opened: the targets of ``/proc/PID/fd/*`` that are regular files, with their open
  mode from ``/proc/PID/fdinfo`` (r or w), sampled every 50 ms (sockets, pipes, /dev and
  anon inodes are ignored).

stdout/stderr go to pipes drained by threads (a file would show up as the child's own disk
writes).
"""

from __future__ import annotations

import os
import subprocess
import threading
import time
from dataclasses import dataclass, field


@dataclass
class Measured:
    cmd: list[str]
    returncode: int
    wall_s: float
    maxrss_kib: int
    vmhwm_kib: int
    write_bytes: int
    cancelled_write_bytes: int
    read_bytes: int
    wchar: int
    rchar: int
    files: list[str] = field(default_factory=list)
    stdout: str = ""
    stderr: str = ""


def _read_kv(path: str) -> dict[str, str]:
    out: dict[str, str] = {}
    try:
        with open(path) as f:
            for line in f:
                k, _, v = line.partition(":")
                out[k.strip()] = v.strip()
    except OSError:
        pass
    return out


def _regular_files(pid: int) -> set[str]:
    """Regular files open in `pid`, as "path (r)" or "path (w)" by their open flags."""
    found = set()
    d = f"/proc/{pid}/fd"
    try:
        for fd in os.listdir(d):
            try:
                t = os.readlink(f"{d}/{fd}")
                flags = int(_read_kv(f"/proc/{pid}/fdinfo/{fd}").get("flags", "0"), 8)
            except (OSError, ValueError):
                continue
            if t.startswith("/") and not t.startswith(("/dev/", "/proc/", "/sys/")):
                found.add(f"{t} ({'w' if flags & (os.O_WRONLY | os.O_RDWR) else 'r'})")
    except OSError:
        pass
    return found


def run(cmd: list[str], env: dict[str, str] | None = None, cwd: str | None = None) -> Measured:
    start = time.monotonic()
    p = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )
    out: dict[str, bytes] = {}

    def drain(name: str, stream) -> None:
        out[name] = stream.read()

    readers = [
        threading.Thread(target=drain, args=("stdout", p.stdout), daemon=True),
        threading.Thread(target=drain, args=("stderr", p.stderr), daemon=True),
    ]
    for t in readers:
        t.start()

    hwm = 0
    files: set[str] = set()
    done = threading.Event()

    def sample() -> None:
        nonlocal hwm
        while not done.is_set():
            st = _read_kv(f"/proc/{p.pid}/status")
            v = st.get("VmHWM", "0 kB").split()[0]
            if v.isdigit():
                hwm = max(hwm, int(v))
            files.update(_regular_files(p.pid))
            done.wait(0.05)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    # Wait for exit without reaping, so /proc/PID/io still holds the final counters.
    os.waitid(os.P_PID, p.pid, os.WEXITED | os.WNOWAIT)
    wall = time.monotonic() - start
    io = _read_kv(f"/proc/{p.pid}/io")
    done.set()
    sampler.join()
    _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    for t in readers:
        t.join()
    return Measured(
        cmd=cmd,
        returncode=p.returncode,
        wall_s=wall,
        maxrss_kib=ru.ru_maxrss,
        vmhwm_kib=hwm,
        write_bytes=int(io.get("write_bytes", -1)),
        cancelled_write_bytes=int(io.get("cancelled_write_bytes", -1)),
        read_bytes=int(io.get("read_bytes", -1)),
        wchar=int(io.get("wchar", -1)),
        rchar=int(io.get("rchar", -1)),
        files=sorted(files),
        stdout=out.get("stdout", b"").decode(errors="replace"),
        stderr=out.get("stderr", b"").decode(errors="replace"),
    )
