"""CPU profile of the headline backup, for docs/benchmarks.md (run by scripts/bench.sh).

Three parts, on the stack the caller started and the images bench.py pushed (or pushes):
  1. `perf record -e cpu-clock` of one ecr-vault backup of the headline image; the top
     symbols of the ecr-vault process, and the share of SHA-256 and of CRC64NVME.
  2. An A/B of plain multipart uploads (the raw-upload helper) with and without what
     ecr-vault adds per part: the x-amz-checksum-sha256 header (server-side SHA-256), and
     SigV4 payload signing (the SDK's SHA-256 of every body, on by default), interleaved,
     with the client's and SeaweedFS's CPU time for each.
  3. Peak RSS of the headline backup with glibc's default malloc and with a fixed mmap
     threshold (GLIBC_TUNABLES), to tell allocator retention from live part buffers.

The result replaces the block between PROFILE_START and PROFILE_END in the markdown file.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import time
from pathlib import Path

import bench
import measure

PROFILE_START = "<!-- profile:start -->"
PROFILE_END = "<!-- profile:end -->"


def perf_available() -> bool:
    if not shutil.which("perf"):
        return False
    r = subprocess.run(["perf", "stat", "-e", "task-clock", "true"], capture_output=True)
    return r.returncode == 0


def perf_record(b: bench.Bench, image: str) -> list[str]:
    data = b.work / "perf.data"
    prefix = f"ev/profile-{image.lower()}"
    cmd = ["perf", "record", "-q", "-e", "cpu-clock", "-F", "999", "-o", str(data), "--"]
    cmd += b.ev_cmd(image, prefix)
    t0 = time.monotonic()
    r = subprocess.run(cmd, env=b.env, capture_output=True, text=True)
    wall = time.monotonic() - t0
    b.purge(prefix + "/")
    if r.returncode != 0:
        return [f"`perf record` failed: {r.stderr.strip()[-300:]}"]
    rep = subprocess.run(["perf", "report", "-i", str(data), "--no-children", "--sort", "dso,symbol",
                          "--stdio", "-q", "--percent-limit", "0.5"],
                         capture_output=True, text=True).stdout
    rows = []
    for line in rep.splitlines():
        m = re.match(r"\s*([\d.]+)%\s+(\S+)\s+\[(.)\]\s+(.*)$", line)
        if m:
            sym = re.split(r"\s{2,}", m.group(4).strip())[0]
            rows.append((float(m.group(1)), m.group(2), m.group(3), sym))
    total = subprocess.run(["perf", "report", "-i", str(data), "--stdio", "--header-only"],
                           capture_output=True, text=True).stdout
    samples = re.search(r"# Samples: (\S+)", rep + total)
    groups = {
        # One sha2 in the tree since decision 0011: the blob digest while streaming, and any
        # SigV4 payload hash the SDK still computes (parts and PUTs are sent unsigned).
        "SHA-256 (sha2: blob digest while streaming, once per byte)":
            lambda s: "sha2::sha256::" in s,
        "CRC64NVME (crc-fast: each part's checksum, combined for the whole object)":
            lambda s: "crc_fast::" in s,
        "kernel (socket copies, page faults, scheduling)": None,
        "memcpy/memmove (user space)": lambda s: "memcpy" in s or "memmove" in s,
    }
    shares = {}
    for pct, dso, kind, sym in rows:
        for g, f in groups.items():
            if (f is None and kind == "k") or (f is not None and f(sym)):
                shares[g] = shares.get(g, 0.0) + pct
                break
    L = [f"`perf record -e cpu-clock -F 999` of one `{image}` backup (extra run, {wall:.1f} s "
         f"wall{', ' + samples.group(1) + ' samples' if samples else ''}); shares of the "
         "ecr-vault process's CPU time (symbols ≥ 0.5 %):", ""]
    L += ["| group | share of CPU |", "|---|---:|"]
    for g in groups:
        L.append(f"| {g} | {shares.get(g, 0.0):.1f} % |")
    L += ["", "<details><summary>Top symbols</summary>", "", "| % | dso | symbol |",
          "|---:|---|---|"]
    for pct, dso, kind, sym in rows[:20]:
        L.append(f"| {pct:.1f} | {dso} | `{sym[:90]}` |")
    L += ["", "</details>", ""]
    return L


def upload_ab(b: bench.Bench, size: int, reps: int) -> list[str]:
    variants = [
        ("plain (the raw-limit upload)", []),
        ("+ x-amz-checksum-sha256 per part (ecr-vault before decision 0011)", ["--checksum"]),
        ("+ UNSIGNED-PAYLOAD", ["--unsigned"]),
        ("+ checksum + UNSIGNED-PAYLOAD", ["--checksum", "--unsigned"]),
    ]
    res: dict[str, list[dict]] = {v[0]: [] for v in variants}
    for rep in range(reps):
        for k, (name, flags) in enumerate(variants[rep % len(variants):] + variants[:rep % len(variants)]):
            prefix = f"ab/{rep}-{k}"
            c0 = b.cpu_snap()
            t0 = time.monotonic()
            bench.sh([str(b.bin / "ecr-vault-bench"), "upload", "--bucket", b.bucket,
                      "--key", f"{prefix}/x", "--size", str(size), *flags], env=b.env)
            row = {"wall_s": time.monotonic() - t0}
            b.cpu_fill(row, c0, b.cpu_snap())
            res[name].append(row)
            b.purge(prefix + "/")
    med = bench.median
    L = [f"Plain multipart uploads of {size >> 20} MiB (16 MiB parts, 6 in flight), "
         f"{reps} interleaved repetitions each, medians:", "",
         "| upload | MB/s | client CPU s | SeaweedFS CPU s | foreign load (cores) |",
         "|---|---:|---:|---:|---:|"]
    for name, _ in variants:
        rows = res[name]
        w = med([r["wall_s"] for r in rows])
        L.append(f"| {name} | {size / 1e6 / w:.0f} | {med([r['cpu_client_s'] for r in rows]):.2f} | "
                 f"{med([r['cpu_weed_s'] or 0 for r in rows]):.2f} | "
                 f"{med([r['foreign_cores'] for r in rows]):.2f} |")
    L.append("")
    return L


def rss_ab(b: bench.Bench, image: str, reps: int) -> list[str]:
    """Peak RSS of the same backup with glibc's default (dynamic) mmap threshold and with it
    fixed at 1 MiB, interleaved: tells allocator retention apart from live buffers."""
    variants = [("glibc default", {}),
                ("GLIBC_TUNABLES=glibc.malloc.mmap_threshold=1048576",
                 {"GLIBC_TUNABLES": "glibc.malloc.mmap_threshold=1048576"})]
    res: dict[str, list[float]] = {v[0]: [] for v in variants}
    for rep in range(reps):
        for name, extra in variants:
            prefix = f"ev/rss-{rep}-{len(res[name])}-{'t' if extra else 'd'}"
            m = measure.run(b.ev_cmd(image, prefix), env={**b.env, **extra})
            b.purge(prefix + "/")
            if m.returncode == 0:
                res[name].append(m.maxrss_kib / 1024)
    L = [f"Peak RSS (MiB) of {reps} `{image}` backups per allocator setting, interleaved:", "",
         "| allocator setting | peak RSS per run (MiB) | min–max |", "|---|---|---:|"]
    for name, _ in variants:
        v = res[name]
        if v:
            L.append(f"| {name} | {', '.join(f'{x:.0f}' for x in v)} | "
                     f"{min(v):.0f}–{max(v):.0f} |")
    L.append("")
    return L


def profile(b: bench.Bench) -> list[str]:
    image = b.images[0][0]
    L = [PROFILE_START, "## CPU profile", "",
         f"Measured {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())} by `scripts/bench.sh` "
         f"(`bench/cpuprofile.py`), same machine"
         f"{'; its own fresh stack (`--profile-only`)' if b.a.profile_only else ' and stack as above'}.",
         ""]
    if perf_available():
        L += perf_record(b, image)
    else:
        L += ["`perf` is not available here; skipped the symbol profile.", ""]
    layer = b.images[0][1][0]
    L += upload_ab(b, layer, 3)
    L += rss_ab(b, image, 5)
    L.append(PROFILE_END)
    return L


def splice(md: Path, block: list[str]) -> None:
    text = md.read_text() if md.exists() else ""
    new = "\n".join(block)
    if PROFILE_START in text and PROFILE_END in text:
        a = text.index(PROFILE_START)
        z = text.index(PROFILE_END) + len(PROFILE_END)
        text = text[:a] + new + text[z:]
    else:
        text = text.rstrip("\n") + "\n\n" + new + "\n"
    md.write_text(text)


__all__ = ["profile", "splice", "measure"]
