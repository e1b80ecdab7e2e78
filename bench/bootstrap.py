#!/usr/bin/env python3
"""Bootstrap size and init time of each Lambda function (issue 17).

For every function image that template.yaml builds (PACKAGE/BIN pairs), this builds the binary
with the workspace's `lambda-release` profile (the one functions/Dockerfile uses: fat LTO, one codegen
unit, symbols stripped), reports its size as built and after `strip --strip-all` (to show
nothing is left to strip), and measures init: from exec to the bootstrap's first
`GET /2018-06-01/runtime/invocation/next` on a Runtime API stub on 127.0.0.1, median of 7
cold starts. The stub never hands out an event; the process is killed once it polls.

The environment is what Lambda gives a function (region, static credentials, function name,
memory) plus the variables template.yaml sets that each function validates at cold start. No
request leaves the machine: init builds the SDK clients, it does not call them.

Native build for the host (x86_64 glibc here), not cargo-lambda's cross-compile: the same
profile and code, so the size is representative, but an arm64 image's binary differs a little.

Replaces the block between BEGIN and END in docs/benchmarks.md (or appends it).

    .venv/bin/python bench/bootstrap.py [--no-build] [--runs 7] [--md docs/benchmarks.md]
"""

from __future__ import annotations

import argparse
import datetime as dt
import http.server
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mdsection  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- bootstrap:begin -->"
END = "<!-- bootstrap:end -->"
PROFILE = "lambda-release"
POLL = "/2018-06-01/runtime/invocation/next"

# What each function needs to pass its cold-start validation (template.yaml sets these).
FUNCTION_ENV = {
    "ecr-vault-backup": {"ECR_VAULT_BUCKET": "bench-vault", "ECR_VAULT_PREFIX": "ecr",
                         "ECR_VAULT_LOCK_MODE": "COMPLIANCE"},
    "ecr-vault-restore": {"ECR_VAULT_BUCKET": "bench-vault", "ECR_VAULT_PREFIX": "ecr"},
    "ecr-vault-drill": {"ECR_VAULT_BUCKET": "bench-vault", "ECR_VAULT_PREFIX": "ecr"},
    "ecr-vault-gc": {"ECR_VAULT_BUCKET": "bench-vault", "ECR_VAULT_PREFIX": "ecr"},
}

# Memory sizes of the template's functions do not change init here; Lambda's value is passed.
LAMBDA_ENV = {
    "AWS_REGION": "us-east-1",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_ACCESS_KEY_ID": "AKIDBENCHBOOTSTRAP00",
    "AWS_SECRET_ACCESS_KEY": "bench-bootstrap-secret",
    "AWS_SESSION_TOKEN": "bench-bootstrap-token",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE": "1769",
    "AWS_LAMBDA_FUNCTION_VERSION": "$LATEST",
    "AWS_LAMBDA_LOG_GROUP_NAME": "/aws/lambda/bench",
    "AWS_LAMBDA_LOG_STREAM_NAME": "bench",
    "AWS_LAMBDA_LOG_FORMAT": "JSON",
    "AWS_LAMBDA_LOG_LEVEL": "WARN",
    "AWS_EC2_METADATA_DISABLED": "true",
    "LANG": "C.UTF-8",
}


def log(msg: str) -> None:
    print(f"[bootstrap {dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def functions() -> list[tuple[str, str]]:
    """The (package, bin) pairs template.yaml builds, in template order, without repeats."""
    text = (REPO_ROOT / "template.yaml").read_text()
    pairs = re.findall(r"DockerBuildArgs:\s*\n\s+PACKAGE:\s*(\S+)\s*\n\s+BIN:\s*(\S+)", text)
    return list(dict.fromkeys(pairs))


class Stub(http.server.ThreadingHTTPServer):
    """A Runtime API that records when each run's first poll arrives and never answers it."""

    daemon_threads = True

    def __init__(self) -> None:
        self.polled = threading.Event()
        self.poll_at = 0.0
        super().__init__(("127.0.0.1", 0), Handler)


class Handler(http.server.BaseHTTPRequestHandler):
    server: Stub

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        if self.path == POLL and not self.server.polled.is_set():
            self.server.poll_at = time.perf_counter()
            self.server.polled.set()
        # Hold the long poll open, as Lambda does between invocations; the run kills the process.
        time.sleep(5)

    def do_POST(self) -> None:  # noqa: N802
        # An init error report means the environment is wrong: record it loudly.
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        log(f"runtime reported {self.path}: {body[:300]!r}")
        self.send_response(202)
        self.end_headers()

    def log_message(self, *_: object) -> None:
        pass


def init_ms(binary: Path, name: str, stub: Stub, home: Path) -> float:
    env = {"PATH": "/usr/bin:/bin", "HOME": str(home),
           "AWS_LAMBDA_RUNTIME_API": f"127.0.0.1:{stub.server_address[1]}",
           "AWS_LAMBDA_FUNCTION_NAME": name, **LAMBDA_ENV, **FUNCTION_ENV.get(name, {})}
    stub.polled.clear()
    start = time.perf_counter()
    proc = subprocess.Popen([str(binary)], env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)
    try:
        if not stub.polled.wait(10):
            proc.kill()
            _, err = proc.communicate()
            raise RuntimeError(f"{name} never polled the Runtime API: {err.decode()[-1500:]}")
        return (stub.poll_at - start) * 1000
    finally:
        proc.kill()
        proc.wait()


def build(pairs: list[tuple[str, str]]) -> None:
    for package, binary in pairs:
        log(f"building {package}/{binary} with the {PROFILE} profile")
        subprocess.run(["cargo", "build", "--locked", "--profile", PROFILE, "-p", package,
                        "--bin", binary], cwd=REPO_ROOT, check=True)


def measure(pairs: list[tuple[str, str]], runs: int) -> list[dict]:
    out = []
    stub = Stub()
    threading.Thread(target=stub.serve_forever, daemon=True).start()
    with tempfile.TemporaryDirectory(prefix="ecr-vault-bootstrap.") as tmp:
        tmpdir = Path(tmp)
        for package, name in pairs:
            binary = REPO_ROOT / "target" / PROFILE / name
            stripped = tmpdir / f"{name}.stripped"
            shutil.copyfile(binary, stripped)
            subprocess.run(["strip", "--strip-all", str(stripped)], check=True)
            init_ms(binary, name, stub, tmpdir)  # page cache warm, as on a reused host
            times = [init_ms(binary, name, stub, tmpdir) for _ in range(runs)]
            row = {"package": package, "bin": name, "bytes": binary.stat().st_size,
                   "stripped_bytes": stripped.stat().st_size, "init_ms": times,
                   "init_median_ms": statistics.median(times)}
            log(f"{name}: {row['bytes'] / 1e6:.1f} MB, init median {row['init_median_ms']:.1f} ms "
                f"({', '.join(f'{t:.1f}' for t in times)})")
            out.append(row)
    stub.shutdown()
    return out


def loadavg() -> str:
    try:
        return " / ".join(Path("/proc/loadavg").read_text().split()[:3])
    except OSError:
        return "unknown"


def section(rows: list[dict], runs: int, load_before: str, load_after: str) -> str:
    rustc = subprocess.run(["rustc", "--version"], capture_output=True, text=True).stdout.strip()
    arch = os.uname().machine
    L = [BEGIN, "## Function bootstraps: size and init", "",
         f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC by `bench/bootstrap.py` "
         f"on {os.cpu_count()} CPUs ({arch}, {rustc}); load average (1/5/15 min) "
         f"{load_before} before and {load_after} after. Built with the workspace's `{PROFILE}` "
         "profile (fat LTO, one codegen unit, symbols stripped), the one `functions/Dockerfile` "
         "uses; native build for this host, so an arm64 image's binary differs slightly. Init is "
         "exec to the first `GET /runtime/invocation/next` on a Runtime API stub on 127.0.0.1, "
         f"median of {runs} (after one untimed start), with Lambda's environment and the "
         "variables each function validates at cold start.", "",
         "| function | package | bootstrap (MB) | after `strip --strip-all` (MB) | init median (ms) | init min–max (ms) | goal |",
         "|---|---|---:|---:|---:|---:|---|"]
    for r in rows:
        goal = ""
        if r["bin"] == "ecr-vault-backup":
            size_ok = r["stripped_bytes"] <= 15e6
            init_ok = r["init_median_ms"] <= 50
            goal = (f"≤ 15 MB: **{'met' if size_ok else 'missed'}**; "
                    f"≤ 50 ms: **{'met' if init_ok else 'missed'}**")
        L.append(f"| {r['bin']} | {r['package']} | {r['bytes'] / 1e6:.1f} | "
                 f"{r['stripped_bytes'] / 1e6:.1f} | {r['init_median_ms']:.1f} | "
                 f"{min(r['init_ms']):.1f}–{max(r['init_ms']):.1f} | {goal} |")
    L += ["", "Before this profile (issue 17): the backup bootstrap was 26 MiB stripped (release "
          "profile, thin LTO, 4 codegen units, with the SDK's default features), init 16 ms.", END]
    return "\n".join(L) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--runs", type=int, default=7)
    p.add_argument("--no-build", action="store_true", help="use target/lambda/ as it is")
    p.add_argument("--md", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    a = p.parse_args()
    pairs = functions()
    if not pairs:
        sys.exit("bootstrap: no PACKAGE/BIN pairs found in template.yaml")
    if not a.no_build:
        build(pairs)
    load_before = loadavg()
    rows = measure(pairs, a.runs)
    mdsection.splice(Path(a.md), section(rows, a.runs, load_before, loadavg()), BEGIN, END)
    log(f"wrote {a.md}")


if __name__ == "__main__":
    main()
