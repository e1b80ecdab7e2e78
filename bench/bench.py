"""ecr-vault benchmark driver (run it through scripts/bench.sh, which starts the stack).

Measures, in one run on the same servers (registry, SeaweedFS S3 on 127.0.0.1):
  1. backup throughput: ecr-vault vs the two-hop path (skopeo -> dir, aws s3 cp) vs the raw
     limit (plain GET of the blobs; plain multipart upload of the same byte count);
  2. peak RSS and local-disk writes of the ecr-vault process;
  3. a no-change rerun;
  4. restore vs the two-hop path back (aws s3 cp of the layout, then skopeo oci: -> docker://).
and writes docs/benchmarks.md + docs/benchmarks.png.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import platform
import shlex
import shutil
import statistics
import subprocess
import sys
import time
import resource
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import measure  # noqa: E402

MiB = 1 << 20
GiB = 1 << 30

# name, layer sizes, seed. The first is the headline.
IMAGES = [
    ("2x256MiB", [256 * MiB, 256 * MiB], 11),
    ("1x256MiB", [256 * MiB], 12),
    ("1x1GiB", [1 * GiB], 13),
    ("1x2GiB", [2 * GiB], 14),
]
QUICK_IMAGES = ["2x256MiB", "1x256MiB"]

TARGET_VS_TWOHOP = 1.5
TARGET_VS_RAW = 0.85
TARGET_RSS_MIB = 200
TARGET_RSS_SPREAD = 0.10

REPO_ROOT = Path(__file__).resolve().parent.parent


def log(msg: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


def sh(cmd: list[str], check: bool = True, env=None, **kw) -> subprocess.CompletedProcess:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, **kw)
    if check and r.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd)} failed ({r.returncode}): {r.stderr[-2000:]}")
    return r


def first_line(cmd: list[str]) -> str:
    try:
        r = subprocess.run(cmd, capture_output=True, text=True, timeout=30)
        text = (r.stdout or r.stderr).strip().splitlines()
        return text[0].strip() if text else "?"
    except Exception as e:  # noqa: BLE001
        return f"? ({e})"


def mb(n: float) -> float:
    return n / 1e6


TICK = os.sysconf("SC_CLK_TCK")


def _proc_cpu(pid: int) -> float:
    try:
        f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(f[11]) + int(f[12])) / TICK
    except (OSError, IndexError, ValueError):
        return 0.0


def _machine_busy() -> float:
    f = [int(x) for x in Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
    idle = f[3] + f[4]
    return (sum(f[:8]) - idle) / TICK


def _children(pid: int) -> list[int]:
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            out += [int(c) for c in Path(f"/proc/{pid}/task/{tid}/children").read_text().split()]
    except OSError:
        pass
    return out


def _rusage_cpu(who) -> float:
    r = resource.getrusage(who)
    return r.ru_utime + r.ru_stime


def forget_skopeo_blob_locations() -> None:
    """Empties skopeo's blob-info cache, where it records which repositories hold a digest.

    With it, a push to the same registry becomes cross-repository mounts from the benchmark's
    source repository: no bytes move. Its path follows containers/image: /var/lib for root,
    the XDG data directory otherwise.
    """
    if os.geteuid() == 0:
        base = Path("/var/lib/containers/cache")
    else:
        base = Path(os.environ.get("XDG_DATA_HOME") or Path.home() / ".local/share") / \
            "containers/cache"
    (base / "blob-info-cache-v1.boltdb").unlink(missing_ok=True)


def median(xs):
    xs = [x for x in xs if x is not None]
    return statistics.median(xs) if xs else None


class Bench:
    def __init__(self, args):
        self.a = args
        self.bin = Path(args.bin_dir)
        self.work = Path(args.work)
        self.venv = REPO_ROOT / ".venv" / "bin"
        self.env = dict(os.environ)
        self.env["PATH"] = f"{self.venv}:{self.env['PATH']}"
        # aws CLI: path-style addressing for the local endpoint (config in the work dir).
        cfg = self.work / "aws-config"
        cfg.write_text("[default]\ns3 =\n  addressing_style = path\n")
        self.env["AWS_CONFIG_FILE"] = str(cfg)
        self.reg_url = self.env["ECR_VAULT_TEST_REGISTRY_URL"]
        self.reg_host = self.env["ECR_VAULT_TEST_REGISTRY_HOST"]
        self.user = self.env["ECR_VAULT_TEST_REGISTRY_USER"]
        self.password = self.env["ECR_VAULT_TEST_REGISTRY_PASSWORD"]
        self.s3 = self.env["AWS_ENDPOINT_URL_S3"]
        self.bucket = self.env.get("ECR_VAULT_TEST_BUCKET", "vault")
        names = QUICK_IMAGES if args.quick else [i[0] for i in IMAGES]
        self.images = [i for i in IMAGES if i[0] in names]
        self.reps = args.reps or (1 if args.quick else 3)
        self.pushed: dict[str, dict] = {}
        self.runs: list[dict] = []  # every measurement, for the raw table
        self.restore: dict = {}
        self.perf: str | None = None
        self.started = dt.datetime.now(dt.timezone.utc)
        self.servers = self.find_servers()

    def find_servers(self) -> dict[str, list[int]]:
        """The registry and SeaweedFS processes the stack started (for their CPU time).

        The stack also runs a second, empty registry (the disaster drill's target), so every
        registry is kept and their CPU summed: the idle one adds nothing. Keeping only the
        first one found measured that idle registry (0.00 registry CPU in every run).
        """
        found: dict[str, list[int]] = {}
        stack = int(self.env.get("ECR_VAULT_STACK_PID", "0") or 0)
        todo = _children(stack) if stack else []
        while todo:
            pid = todo.pop()
            try:
                comm = Path(f"/proc/{pid}/comm").read_text().strip()
            except OSError:
                continue
            if comm == "weed":
                found.setdefault("weed", []).append(pid)
            elif comm.startswith("docker-regis"):
                found.setdefault("registry", []).append(pid)
            todo += _children(pid)
        log(f"server processes: {found}")
        return found

    def cpu_snap(self) -> dict:
        snap = {k: sum(_proc_cpu(p) for p in pids) for k, pids in self.servers.items()}
        snap["client"] = _rusage_cpu(resource.RUSAGE_CHILDREN)
        snap["self"] = _rusage_cpu(resource.RUSAGE_SELF)
        snap["busy"] = _machine_busy()
        snap["t"] = time.monotonic()
        return snap

    @staticmethod
    def cpu_fill(row: dict, a: dict, b: dict) -> dict:
        """CPU seconds used during a measurement: by the client command(s), SeaweedFS, the
        registry, and by everything else on the machine (other users: noise)."""
        d = {k: b[k] - a[k] for k in a}
        row["cpu_client_s"] = d["client"]
        row["cpu_weed_s"] = d.get("weed")
        row["cpu_registry_s"] = d.get("registry")
        other = d["busy"] - d["client"] - d["self"] - (d.get("weed") or 0) - (d.get("registry") or 0)
        row["foreign_cores"] = max(other, 0.0) / d["t"] if d["t"] > 0 else None
        return row

    # ---------------------------------------------------------------- commands
    def ev_cmd(self, image: str, prefix: str) -> list[str]:
        return [
            str(self.bin / "ecr-vault"), "backup",
            "--registry", self.reg_url,
            "--username", self.user, "--password", self.password,
            "--vault", f"s3://{self.bucket}/{prefix}",
            "--repository", f"bench/{image.lower()}",
            # Governance so the bench can purge between repetitions (same code path and
            # request shape as compliance; only the header value differs).
            "--lock-mode", "governance", "--retention-days", "1", "--lock-slack-days", "0",
            "--output", "json",
        ]

    def ref(self, image: str) -> str:
        return f"{self.reg_host}/bench/{image.lower()}:latest"

    # ---------------------------------------------------------------- steps
    def push_images(self) -> None:
        for name, layers, seed in self.images:
            t = time.monotonic()
            r = sh([str(self.bin / "ecr-vault-bench"), "push", "--repo", f"bench/{name.lower()}",
                    "--tag", "latest", "--seed", str(seed),
                    "--layers", ",".join(str(s) for s in layers)], env=self.env)
            info = json.loads(r.stdout)
            info["push_s"] = time.monotonic() - t
            info["layers"] = layers
            self.pushed[name] = info
            log(f"pushed {name}: {info['total_bytes']} bytes in {info['push_s']:.1f}s")

    def purge(self, prefix: str) -> None:
        r = sh([str(self.bin / "ecr-vault-bench"), "purge", "--bucket", self.bucket,
                "--prefix", prefix], env=self.env, check=False)
        log(f"purge {prefix}: {(r.stdout or r.stderr).strip()[-300:]}")

    def run_ecr_vault(self, image: str, rep: int) -> None:
        prefix = f"ev/r{rep}-{image.lower()}"
        total = self.pushed[image]["total_bytes"]
        for kind in ("backup", "rerun"):
            c0 = self.cpu_snap()
            m = measure.run(self.ev_cmd(image, prefix), env=self.env)
            c1 = self.cpu_snap()
            if m.returncode != 0:
                raise RuntimeError(f"ecr-vault {kind} failed: {m.stderr[-2000:]}")
            report = json.loads(m.stdout)
            counts = report.get("counts", {})
            row = {
                "method": "ecr-vault" if kind == "backup" else "ecr-vault rerun",
                "image": image, "rep": rep, "bytes": total, "wall_s": m.wall_s,
                "maxrss_mib": m.maxrss_kib / 1024, "vmhwm_mib": m.vmhwm_kib / 1024,
                "write_bytes": m.write_bytes, "cancelled_write_bytes": m.cancelled_write_bytes,
                "read_bytes": m.read_bytes, "files": m.files,
                "bytes_written": counts.get("bytesWritten"),
                "blobs_written": counts.get("blobsWritten"),
                "blobs_existing": counts.get("blobsExisting"),
                "complete": report.get("complete"),
            }
            self.cpu_fill(row, c0, c1)
            self.runs.append(row)
            log(f"r{rep} {image} {row['method']}: {m.wall_s:.2f}s "
                f"({mb(total) / m.wall_s:.0f} MB/s) rss {row['maxrss_mib']:.0f} MiB "
                f"disk {m.write_bytes} B written {row['bytes_written']}")

    def run_twohop(self, image: str, rep: int) -> None:
        total = self.pushed[image]["total_bytes"]
        d = self.work / f"twohop-{rep}-{image.lower()}"
        shutil.rmtree(d, ignore_errors=True)
        prefix = f"twohop/r{rep}-{image.lower()}"
        c0 = self.cpu_snap()
        t0 = time.monotonic()
        sh(["skopeo", "copy", "--quiet", "--src-tls-verify=false",
            "--src-creds", f"{self.user}:{self.password}",
            f"docker://{self.ref(image)}", f"dir:{d}"], env=self.env)
        t1 = time.monotonic()
        sh(["aws", "--endpoint-url", self.s3, "s3", "cp", "--recursive", "--only-show-errors",
            str(d), f"s3://{self.bucket}/{prefix}/"], env=self.env)
        t2 = time.monotonic()
        c1 = self.cpu_snap()
        shutil.rmtree(d, ignore_errors=True)
        self.purge(prefix + "/")
        row = {"method": "two-hop", "image": image, "rep": rep, "bytes": total,
               "wall_s": t2 - t0, "skopeo_s": t1 - t0, "aws_s": t2 - t1}
        self.runs.append(self.cpu_fill(row, c0, c1))
        log(f"r{rep} {image} two-hop: {t2 - t0:.2f}s (skopeo {t1 - t0:.1f}s + aws {t2 - t1:.1f}s)"
            f" = {mb(total) / (t2 - t0):.0f} MB/s")

    def run_raw(self, image: str, rep: int) -> None:
        info = self.pushed[image]
        blobs = info["blobs"]
        nbytes = sum(b["size"] for b in blobs)
        # GET: every blob (config and layers), one after the other, into /dev/null.
        c0 = self.cpu_snap()
        t0 = time.monotonic()
        got = 0
        for b in blobs:
            r = sh(["curl", "-s", "-f", "-u", f"{self.user}:{self.password}", "-o", "/dev/null",
                    "-w", "%{size_download}",
                    f"{self.reg_url}/v2/{info['repo']}/blobs/{b['digest']}"])
            got += int(float(r.stdout.strip()))
        t1 = time.monotonic()
        c1 = self.cpu_snap()
        assert got == nbytes, (got, nbytes)
        self.runs.append(self.cpu_fill({"method": "raw GET", "image": image, "rep": rep,
                                        "bytes": nbytes, "wall_s": t1 - t0}, c0, c1))
        # Upload: one plain multipart upload per layer of the same size, same part size and
        # parallelism as ecr-vault's defaults, bytes from memory, no checksums.
        prefix = f"raw/r{rep}-{image.lower()}"
        c2 = self.cpu_snap()
        t2 = time.monotonic()
        for i, b in enumerate(blobs):
            if b["role"] != "layer":
                continue
            sh([str(self.bin / "ecr-vault-bench"), "upload", "--bucket", self.bucket,
                "--key", f"{prefix}/{i}", "--size", str(b["size"]),
                "--part-size-mib", "16", "--parallel", "6"], env=self.env)
        t3 = time.monotonic()
        c3 = self.cpu_snap()
        self.purge(prefix + "/")
        layer_bytes = sum(b["size"] for b in blobs if b["role"] == "layer")
        self.runs.append(self.cpu_fill({"method": "raw upload", "image": image, "rep": rep,
                                        "bytes": layer_bytes, "wall_s": t3 - t2}, c2, c3))
        log(f"r{rep} {image} raw: GET {mb(nbytes) / (t1 - t0):.0f} MB/s, "
            f"upload {mb(layer_bytes) / (t3 - t2):.0f} MB/s")

    def run_perf_stat(self) -> None:
        """One extra headline backup under `perf stat` (not counted in the medians)."""
        if not shutil.which("perf"):
            return
        image = self.images[0][0]
        prefix = f"ev/perf-{image.lower()}"
        out = self.work / "perf-stat.txt"
        r = subprocess.run(["perf", "stat", "-o", str(out), "-e",
                            "task-clock,context-switches,cpu-migrations,page-faults", "--"]
                           + self.ev_cmd(image, prefix), env=self.env, capture_output=True,
                           text=True)
        if r.returncode == 0 and out.exists():
            self.perf = out.read_text().strip()
        self.purge(prefix + "/")

    def run_restore(self) -> None:
        """Restore vs the two-hop path back, for every image.

        Every run pushes into a repository that has never held the image, so both paths send
        every byte: ecr-vault mounts only blobs it pushed earlier in the same run, and skopeo's
        blob-info cache (which would turn the push into cross-repository mounts from the
        benchmark's source repository) is emptied before each two-hop run.
        """
        probe = subprocess.run([str(self.bin / "ecr-vault"), "restore", "--help"],
                               capture_output=True, text=True, env=self.env)
        if probe.returncode != 0:
            self.restore = {"available": False,
                            "why": (probe.stderr or probe.stdout).strip().splitlines()[:1]}
            log("restore: not yet available")
            return
        self.restore = {"available": True, "rows": []}
        for image, _, _ in self.images:
            prefix = f"ev/restore-{image.lower()}"
            vault = f"s3://{self.bucket}/{prefix}"
            m = measure.run(self.ev_cmd(image, prefix), env=self.env)
            if m.returncode != 0:
                raise RuntimeError(f"backup for restore failed: {m.stderr[-2000:]}")
            total = self.pushed[image]["total_bytes"]
            repo = f"bench/{image.lower()}"
            steps = [self.restore_ecr_vault, self.restore_twohop]
            for rep in range(self.reps):
                for k in range(len(steps)):
                    steps[(k + rep) % len(steps)](image, repo, vault, total, rep)
            self.purge(prefix + "/")

    def restore_cmd(self, vault: str, repo: str, target: str) -> list[str]:
        return [str(self.bin / "ecr-vault"), "restore", "--vault", vault,
                "--registry", self.reg_url, "--username", self.user,
                "--password", self.password, "--repository", repo,
                "--rename", f"{repo}={target}", "--output", "json"]

    def restore_ecr_vault(self, image: str, repo: str, vault: str, total: int, rep: int) -> None:
        target = f"restored/{repo}-r{rep}"
        cmd = self.restore_cmd(vault, repo, target)
        self.restore["cmd"] = shlex.join(cmd).replace(self.password, "$PASSWORD").replace(
            f"-r{rep}", "-rN")
        c0 = self.cpu_snap()
        m = measure.run(cmd, env=self.env)
        c1 = self.cpu_snap()
        if m.returncode != 0:
            raise RuntimeError(f"ecr-vault restore failed: {(m.stderr or m.stdout)[-2000:]}")
        report = json.loads(m.stdout)
        row = {"method": "ecr-vault restore", "image": image, "rep": rep, "bytes": total,
               "wall_s": m.wall_s, "maxrss_mib": m.maxrss_kib / 1024,
               "vmhwm_mib": m.vmhwm_kib / 1024, "write_bytes": m.write_bytes,
               "cancelled_write_bytes": m.cancelled_write_bytes, "files": m.files,
               "bytes_written": report.get("bytesPushed"),
               "blobs_pushed": report.get("blobsPushed"),
               "blobs_mounted": report.get("blobsMounted"),
               "blobs_present": report.get("blobsPresent")}
        self.cpu_fill(row, c0, c1)
        self.restore["rows"].append(row)
        log(f"r{rep} {image} restore: {m.wall_s:.2f}s ({mb(total) / m.wall_s:.0f} MB/s) "
            f"rss {row['maxrss_mib']:.0f} MiB, pushed {row['blobs_pushed']} blobs")

    def restore_twohop(self, image: str, repo: str, vault: str, total: int, rep: int) -> None:
        d = self.work / f"restore-{image.lower()}-{rep}"
        shutil.rmtree(d, ignore_errors=True)
        forget_skopeo_blob_locations()
        c0 = self.cpu_snap()
        t0 = time.monotonic()
        sh(["aws", "--endpoint-url", self.s3, "s3", "cp", "--recursive", "--only-show-errors",
            f"{vault}/", str(d)], env=self.env)
        # The vault is an OCI layout whose index is the newest snapshot.
        snaps = sorted((d / "snapshots").glob("*.json"))
        shutil.copy(snaps[-1], d / "index.json")
        t1 = time.monotonic()
        sh(["skopeo", "copy", "--quiet", "--dest-tls-verify=false",
            "--dest-creds", f"{self.user}:{self.password}",
            f"oci:{d}:{repo}:latest",
            f"docker://{self.reg_host}/restored-twohop/{repo}-r{rep}:latest"], env=self.env)
        t2 = time.monotonic()
        c1 = self.cpu_snap()
        shutil.rmtree(d, ignore_errors=True)
        row = {"method": "two-hop restore", "image": image, "rep": rep, "bytes": total,
               "wall_s": t2 - t0, "aws_s": t1 - t0, "skopeo_s": t2 - t1}
        self.cpu_fill(row, c0, c1)
        self.restore["rows"].append(row)
        log(f"r{rep} {image} two-hop restore: {t2 - t0:.2f}s "
            f"(aws {t1 - t0:.2f}s + skopeo {t2 - t1:.2f}s)")

    # ---------------------------------------------------------------- main loop
    def run(self) -> None:
        log(f"images: {[i[0] for i in self.images]}, repetitions: {self.reps}")
        self.push_images()
        steps = [self.run_ecr_vault, self.run_twohop, self.run_raw]
        for rep in range(self.reps):
            for name, _, _ in self.images:
                # Rotate the order each repetition so no method always runs first.
                for k in range(len(steps)):
                    steps[(k + rep) % len(steps)](name, rep)
            # Keep the last repetition's vault objects; earlier ones only take disk.
            if rep + 1 < self.reps:
                for name, _, _ in self.images:
                    self.purge(f"ev/r{rep}-{name.lower()}/")
        self.run_perf_stat()
        self.run_restore()
        self.finished = dt.datetime.now(dt.timezone.utc)


# -------------------------------------------------------------------- reporting
def machine_info() -> dict:
    mem = measure._read_kv("/proc/meminfo").get("MemTotal", "?")
    cpu = "?"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    tmp = os.environ.get("TMPDIR", "/tmp")
    df = first_line(["sh", "-c", f"df -h --output=source,fstype,size,avail {shlex.quote(tmp)} | tail -1"])
    dev = first_line(["sh", "-c", f"df --output=source {shlex.quote(tmp)} | tail -1"])
    rota = first_line(["sh", "-c", f"lsblk -d -n -o NAME,ROTA,SIZE,TYPE {shlex.quote(dev)} 2>/dev/null"])
    virt = first_line(["sh", "-c", "systemd-detect-virt 2>/dev/null || lscpu | awk -F: '/Hypervisor vendor/{print $2}'"])
    return {
        "nproc": os.cpu_count(),
        "mem": mem,
        "cpu": cpu,
        "kernel": platform.release(),
        "virt": virt.strip(),
        "tmp_disk": f"{tmp}: {df}",
        "block device (NAME ROTA SIZE TYPE)": rota,
    }


def versions(bin_dir: Path) -> dict:
    rev = first_line(["git", "-C", str(REPO_ROOT), "rev-parse", "--short=12", "HEAD"])
    dirty = subprocess.run(["git", "-C", str(REPO_ROOT), "status", "--porcelain",
                            "--untracked-files=no", "--", "crates", "Cargo.toml", "Cargo.lock"],
                           capture_output=True, text=True).stdout
    venv = REPO_ROOT / ".venv" / "bin"
    return {
        "ecr-vault": f"{first_line([str(bin_dir / 'ecr-vault'), '--version'])} (git {rev}"
                     f"{', with uncommitted changes in crates/' if dirty.strip() else ''})",
        "rustc": first_line(["rustc", "--version"]),
        "skopeo": first_line(["skopeo", "--version"]),
        "docker-registry": first_line(["docker-registry", "--version"]),
        "weed (SeaweedFS)": first_line([str(venv / "weed"), "version"]),
        "aws CLI": first_line([str(venv / "aws"), "--version"]),
        "curl": first_line(["curl", "--version"]),
        "python / matplotlib": f"{platform.python_version()} / "
                               f"{__import__('matplotlib').__version__}",
    }


def fmt(x, spec=".0f", none="–"):
    return none if x is None else format(x, spec)


def ratio_str(x):
    return "–" if x is None else f"{x:.2f}×"


def summarize(b: Bench) -> dict:
    by = {}
    for r in b.runs:
        by.setdefault((r["image"], r["method"]), []).append(r)

    def thr(image, method):
        rows = by.get((image, method), [])
        return median([mb(r["bytes"]) / r["wall_s"] for r in rows])

    def cpu(image, method):
        rows = by.get((image, method), [])
        gb = lambda r: r["bytes"] / 1e9  # noqa: E731
        return {
            "client": median([r.get("cpu_client_s", 0) / gb(r) for r in rows]),
            "weed": median([(r.get("cpu_weed_s") or 0) / gb(r) for r in rows]),
            "registry": median([(r.get("cpu_registry_s") or 0) / gb(r) for r in rows]),
            "foreign": median([r.get("foreign_cores") for r in rows]),
        } if rows else None

    out = {}
    for name, layers, _ in b.images:
        ev = thr(name, "ecr-vault")
        th = thr(name, "two-hop")
        get = thr(name, "raw GET")
        up = thr(name, "raw upload")
        raw = min(get, up) if get and up else None
        evrows = by.get((name, "ecr-vault"), [])
        rerun = by.get((name, "ecr-vault rerun"), [])
        out[name] = {
            "layers": layers,
            "bytes": b.pushed[name]["total_bytes"],
            "ev": ev, "twohop": th, "get": get, "upload": up, "raw": raw,
            "ev_wall": median([r["wall_s"] for r in evrows]),
            "th_wall": median([r["wall_s"] for r in by.get((name, "two-hop"), [])]),
            "vs_twohop": ev / th if ev and th else None,
            "vs_raw": ev / raw if ev and raw else None,
            "rss_med": median([r["maxrss_mib"] for r in evrows]),
            "rss_max": max((r["maxrss_mib"] for r in evrows), default=None),
            "hwm_max": max((r["vmhwm_mib"] for r in evrows), default=None),
            "disk_max": max((r["write_bytes"] for r in evrows + rerun), default=None),
            "cancelled_max": max((r["cancelled_write_bytes"] for r in evrows + rerun), default=None),
            "files": sorted({f for r in evrows + rerun for f in r["files"]}),
            "rerun_wall": median([r["wall_s"] for r in rerun]),
            "rerun_bytes": max((r["bytes_written"] or 0 for r in rerun), default=None),
            "rerun_blobs": max((r["blobs_written"] or 0 for r in rerun), default=None),
            "rerun_existing": median([r["blobs_existing"] for r in rerun]),
            "cpu": {m: cpu(name, m) for m in ("ecr-vault", "two-hop", "raw GET", "raw upload")},
        }
    return out


def summarize_restore(b: Bench) -> dict:
    rows = b.restore.get("rows", []) if b.restore else []
    out = {}
    for name, layers, _ in b.images:
        ev = [r for r in rows if r["image"] == name and r["method"] == "ecr-vault restore"]
        th = [r for r in rows if r["image"] == name and r["method"] == "two-hop restore"]
        if not ev:
            continue
        evt = median([mb(r["bytes"]) / r["wall_s"] for r in ev])
        tht = median([mb(r["bytes"]) / r["wall_s"] for r in th])
        out[name] = {
            "layers": layers, "ev": evt, "twohop": tht,
            "vs_twohop": evt / tht if evt and tht else None,
            "ev_wall": median([r["wall_s"] for r in ev]),
            "th_wall": median([r["wall_s"] for r in th]),
            "rss_med": median([r["maxrss_mib"] for r in ev]),
            "rss_max": max(r["maxrss_mib"] for r in ev),
            "disk_max": max(r["write_bytes"] for r in ev),
            "files": sorted({f for r in ev for f in r["files"]}),
            "pushed_min": min((r["bytes_written"] or 0) for r in ev),
            "mounted_max": max((r["blobs_mounted"] or 0) for r in ev),
            "present_max": max((r["blobs_present"] or 0) for r in ev),
            "cpu": {m: {
                "client": median([r["cpu_client_s"] / (r["bytes"] / 1e9) for r in rr]),
                "weed": median([(r["cpu_weed_s"] or 0) / (r["bytes"] / 1e9) for r in rr]),
                "registry": median([(r["cpu_registry_s"] or 0) / (r["bytes"] / 1e9) for r in rr]),
                "foreign": median([r["foreign_cores"] for r in rr]),
            } for m, rr in (("ecr-vault restore", ev), ("two-hop restore", th)) if rr},
        }
    return out


def chart(b: Bench, s: dict, rs: dict, path: Path) -> None:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    singles = [(n, v) for n, v in s.items() if len(v["layers"]) == 1]
    singles.sort(key=lambda nv: nv[1]["layers"][0])
    x = [v["layers"][0] / MiB for _, v in singles]
    rsingles = [(n, rs[n]) for n, _ in singles if n in rs]
    rx = [v["layers"][0] / MiB for _, v in rsingles]
    fig, (ax1, ax3, ax2) = plt.subplots(1, 3, figsize=(16, 4.8))
    series = [("ecr-vault", "ev", "o-", "tab:blue"),
              ("two-hop (skopeo dir: + aws s3 cp)", "twohop", "s--", "tab:orange"),
              ("raw limit (min of GET, upload)", "raw", "^:", "tab:green")]
    for label, key, style, color in series:
        ax1.plot(x, [v[key] for _, v in singles], style, color=color, label=label)
    head = b.images[0][0]
    if len(s[head]["layers"]) > 1:
        hv = s[head]
        hx = sum(hv["layers"]) / MiB
        for label, key, style, color in series:
            ax1.plot([hx], [hv[key]], style[0], color=color, markerfacecolor="none",
                     markersize=10)
        ax1.annotate(f"{head} (hollow)", (hx, hv["ev"]), textcoords="offset points",
                     xytext=(8, 6), fontsize=8)
    ax1.set_title("Backup throughput, registry → S3 (127.0.0.1)")
    ax1.set_xlabel("layer size (MiB; hollow markers: image total)")
    ax1.set_ylabel("MB/s (median)")

    if rsingles:
        ax3.plot(rx, [v["ev"] for _, v in rsingles], "o-", color="tab:blue",
                 label="ecr-vault restore")
        ax3.plot(rx, [v["twohop"] for _, v in rsingles], "s--", color="tab:orange",
                 label="two-hop (aws s3 cp + skopeo oci:)")
    ax3.set_title("Restore throughput, S3 → registry (127.0.0.1)")
    ax3.set_xlabel("layer size (MiB)")
    ax3.set_ylabel("MB/s (median)")
    for ax, xs in ((ax1, x), (ax3, rx or x)):
        ax.set_xscale("log", base=2)
        ax.set_ylim(bottom=0)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8, loc="lower right")
        ax.set_xticks(xs)
        ax.set_xticklabels([f"{int(v)}" for v in xs])

    rss = [v["rss_med"] for _, v in singles]
    ax2.plot(x, rss, "o-", color="tab:blue", label="backup peak RSS (median)")
    if rsingles:
        ax2.plot(rx, [v["rss_med"] for _, v in rsingles], "D-.", color="tab:purple",
                 label="restore peak RSS (median)")
    ax2.axhline(TARGET_RSS_MIB, color="tab:red", linestyle="--", label=f"target {TARGET_RSS_MIB} MiB")
    ax2.axhline(16 * 6, color="grey", linestyle=":", label="part buffers: 16 MiB × 6")
    ax2.set_xscale("log", base=2)
    ax2.set_xticks(x)
    ax2.set_xticklabels([f"{int(v)}" for v in x])
    ax2.set_xlabel("layer size (MiB)")
    ax2.set_ylabel("MiB")
    ax2.set_ylim(0, max(TARGET_RSS_MIB, max(r for r in rss if r)) * 1.15)
    ax2.set_title("ecr-vault peak RSS vs layer size (defaults)")
    ax2.grid(True, alpha=0.3)
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(f"ecr-vault benchmark, {b.started:%Y-%m-%d}, {os.cpu_count()} CPUs, "
                 f"median of {b.reps}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def cpu_table(summary: dict) -> list[str]:
    """Markdown rows of CPU seconds per GB by process, one row per image and method."""
    rows = ["| image | method | client s/GB | SeaweedFS s/GB | registry s/GB | total s/GB | "
            "foreign load (cores) |",
            "|---|---|---:|---:|---:|---:|---:|"]
    for n, v in summary.items():
        for meth, c in v["cpu"].items():
            if not c:
                continue
            tot = sum(c[k] or 0 for k in ("client", "weed", "registry"))
            rows.append(f"| {n} | {meth} | {fmt(c['client'], '.2f')} | {fmt(c['weed'], '.2f')} | "
                        f"{fmt(c['registry'], '.2f')} | {tot:.2f} | {fmt(c['foreign'], '.2f')} |")
    return rows


def write_markdown(b: Bench, s: dict, rs: dict, md: Path, png: Path, machine: dict,
                   vers: dict) -> None:
    head = b.images[0][0]
    hs = s[head]
    singles = [n for n in s if len(s[n]["layers"]) == 1]
    rss_vals = [s[n]["rss_med"] for n in singles if s[n]["rss_med"]]
    rss_spread = (max(rss_vals) / min(rss_vals) - 1) if len(rss_vals) > 1 else None
    rss_max = max((s[n]["rss_max"] for n in s if s[n]["rss_max"]), default=None)
    disk_max = max([s[n]["disk_max"] for n in s if s[n]["disk_max"] is not None]
                   + [v["disk_max"] for v in rs.values()], default=None)
    files = sorted({f for n in s for f in s[n]["files"]} | {f for v in rs.values()
                                                          for f in v["files"]})
    wfiles = [f for f in files if f.endswith("(w)")]

    def met(ok):
        return "**met**" if ok else "**missed**"

    L = []
    L.append("# Benchmarks")
    L.append("")
    L.append(f"Generated by `scripts/bench.sh{' --quick' if b.a.quick else ''}` on "
             f"{b.started:%Y-%m-%d %H:%M} UTC (run took "
             f"{(b.finished - b.started).total_seconds() / 60:.1f} min). Every figure below was "
             f"measured in that one run, on one machine, against the same local servers "
             f"(docker-registry and SeaweedFS S3, both on 127.0.0.1); medians of "
             f"{b.reps} repetition{'s' if b.reps > 1 else ''}. Rerun it with "
             f"`bash scripts/bench.sh` (full, ~10–20 min depending on the machine) or `bash scripts/bench.sh --quick` "
             f"(256 MiB layers only, one repetition).")
    L.append("")
    L.append("## Targets")
    L.append("")
    L.append("| target | measured | |")
    L.append("|---|---|---|")
    if hs["vs_twohop"] is not None:
        L.append(f"| headline ({head}): ecr-vault ≥ {TARGET_VS_TWOHOP}× the two-hop path | "
                 f"{hs['vs_twohop']:.2f}× ({hs['ev']:.0f} vs {hs['twohop']:.0f} MB/s) | "
                 f"{met(hs['vs_twohop'] >= TARGET_VS_TWOHOP)} |")
    if hs["vs_raw"] is not None:
        L.append(f"| headline ({head}): ecr-vault ≥ {TARGET_VS_RAW:.0%} of the raw limit | "
                 f"{hs['vs_raw']:.0%} ({hs['ev']:.0f} vs {hs['raw']:.0f} MB/s) | "
                 f"{met(hs['vs_raw'] >= TARGET_VS_RAW)} |")
    for n in s:
        if n == head:
            continue
        v = s[n]
        if v["vs_twohop"] is not None and v["vs_raw"] is not None:
            L.append(f"| {n}: ≥ {TARGET_VS_TWOHOP}× two-hop / ≥ {TARGET_VS_RAW:.0%} raw | "
                     f"{v['vs_twohop']:.2f}× / {v['vs_raw']:.0%} | "
                     f"{met(v['vs_twohop'] >= TARGET_VS_TWOHOP)} / "
                     f"{met(v['vs_raw'] >= TARGET_VS_RAW)} |")
    for n, v in rs.items():
        if v["vs_twohop"] is not None:
            L.append(f"| restore {n}: ecr-vault ≥ {TARGET_VS_TWOHOP}× the two-hop path back | "
                     f"{v['vs_twohop']:.2f}× ({v['ev']:.0f} vs {v['twohop']:.0f} MB/s) | "
                     f"{met(v['vs_twohop'] >= TARGET_VS_TWOHOP)} |")
    if rss_max is not None:
        L.append(f"| peak RSS < {TARGET_RSS_MIB} MiB with defaults (every run) | max "
                 f"{rss_max:.0f} MiB | {met(rss_max < TARGET_RSS_MIB)} |")
    if rss_spread is not None:
        L.append(f"| peak RSS independent of layer size within {TARGET_RSS_SPREAD:.0%} "
                 f"({', '.join(singles)}) | spread of medians {rss_spread:.1%} | "
                 f"{met(rss_spread <= TARGET_RSS_SPREAD)} |")
    elif b.a.quick:
        L.append(f"| peak RSS independent of layer size within {TARGET_RSS_SPREAD:.0%} | "
                 f"not measured (`--quick` has one layer size) | – |")
    rrss = [rs[n]["rss_med"] for n in singles if n in rs]
    if len(rrss) > 1:
        spread = max(rrss) / min(rrss) - 1
        L.append(f"| restore peak RSS independent of layer size within {TARGET_RSS_SPREAD:.0%} | "
                 f"spread of medians {spread:.1%} (max {max(v['rss_max'] for v in rs.values()):.0f}"
                 f" MiB) | {met(spread <= TARGET_RSS_SPREAD)} |")
    if disk_max is not None:
        L.append(f"| 0 bytes written to local disk by ecr-vault | max write_bytes "
                 f"{disk_max} B; regular files opened for writing: {len(wfiles)} | "
                 f"{met(disk_max == 0 and not wfiles)} (backups, reruns and restores) |")
    L.append("")
    L.append(f"![throughput and RSS against layer size]({png.name})")
    L.append("")
    L.append("## Backup throughput (registry → vault)")
    L.append("")
    L.append("MB = 10⁶ bytes. Throughput = bytes of the image (blobs + manifest) ÷ wall time of "
             "the whole command(s), process start to exit. Ratios use the medians.")
    L.append("")
    L.append("| image | bytes | ecr-vault MB/s | two-hop MB/s | raw GET MB/s | raw upload MB/s | "
             "raw limit MB/s | ecr-vault / two-hop | ecr-vault / raw |")
    L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for n, v in s.items():
        L.append(f"| {n}{' (headline)' if n == head else ''} | {v['bytes']:,} | "
                 f"**{fmt(v['ev'])}** | {fmt(v['twohop'])} | {fmt(v['get'])} | "
                 f"{fmt(v['upload'])} | {fmt(v['raw'])} | {ratio_str(v['vs_twohop'])} | "
                 f"{fmt(v['vs_raw'] * 100 if v['vs_raw'] else None)} % |")
    L.append("")
    L.append("Median wall times (s): " + "; ".join(
        f"{n}: ecr-vault {fmt(v['ev_wall'], '.2f')}, two-hop {fmt(v['th_wall'], '.2f')}"
        for n, v in s.items()) + ".")
    L.append("")
    L.append("### Where the CPU goes")
    L.append("")
    L.append("CPU seconds per GB moved (medians), split into the client command(s), the SeaweedFS "
             "process and the registry process, from `/proc/PID/stat` and `getrusage` around each "
             "measurement; *foreign load* is the CPU used meanwhile by everything else on the "
             "machine (other users), in cores out of "
             f"{os.cpu_count()}: the noise this run saw.")
    L.append("")
    L += cpu_table(s)
    L.append("")
    L.append("## Memory and local disk (ecr-vault process, default settings)")
    L.append("")
    L.append("Defaults: 16 MiB parts × 6 in flight (96 MiB of part buffers), 8 blob transfers, "
             "4 images at once.")
    L.append("")
    L.append("| image | peak RSS median (MiB) | peak RSS max (MiB) | VmHWM sampled max (MiB) | "
             "write_bytes max | cancelled_write_bytes max | regular files opened |")
    L.append("|---|---:|---:|---:|---:|---:|---|")
    for n, v in s.items():
        L.append(f"| {n} | {fmt(v['rss_med'], '.1f')} | {fmt(v['rss_max'], '.1f')} | "
                 f"{fmt(v['hwm_max'], '.1f')} | {v['disk_max']} | {v['cancelled_max']} | "
                 f"{', '.join(v['files']) or 'none'} |")
    L.append("")
    L.append("How: `bench/measure.py` starts the CLI with stdout/stderr on pipes (a file would "
             "count as the CLI's own disk writes), waits for it with "
             "`waitid(WEXITED | WNOWAIT)` so the exited process stays a zombie, reads "
             "`/proc/PID/io` (write_bytes and cancelled_write_bytes, summed over all its "
             "threads), then reaps it with `wait4` and takes `ru_maxrss` (the kernel's peak RSS "
             "for the process, what `/usr/bin/time -v` prints). A sampler thread also reads "
             "`VmHWM` from `/proc/PID/status` and lists `/proc/PID/fd` every 50 ms, keeping "
             "the targets that are regular files with their open mode (r/w from "
             "`/proc/PID/fdinfo`). The rerun rows are included in the disk columns.")
    L.append("")
    L.append("## No-change rerun")
    L.append("")
    L.append("The same backup again, into the same vault prefix, right after each backup.")
    L.append("")
    L.append("| image | wall (s, median) | counts.bytesWritten (max) | blobs written (max) | "
             "blobs already in the vault |")
    L.append("|---|---:|---:|---:|---:|")
    for n, v in s.items():
        L.append(f"| {n} | {fmt(v['rerun_wall'], '.2f')} | {v['rerun_bytes']} | "
                 f"{v['rerun_blobs']} | {fmt(v['rerun_existing'], '.0f')} |")
    L.append("")
    L.append("## Restore (vault → registry)")
    L.append("")
    r = b.restore
    if not rs:
        L.append("Not run." if not r or r.get("available") else
                 f"**Not available**: `ecr-vault restore --help` failed "
                 f"(`{' '.join(r.get('why') or [])}`).")
    else:
        L.append("Each image is backed up once into its own prefix; then, per repetition, "
                 "`ecr-vault restore` and the two-hop path back each push it into a repository "
                 "that has never held it (order rotating). Throughput = image bytes ÷ wall time "
                 "of the whole command(s).")
        L.append("")
        L.append(f"- **ecr-vault**: `{r.get('cmd', '')}`")
        L.append("- **two-hop back**, both hops timed together: `aws s3 cp --recursive "
                 "s3://vault/ev/restore-IMAGE/ $TMP/x`, the newest snapshot copied to "
                 "`$TMP/x/index.json` (the vault is an OCI layout), then `skopeo copy "
                 "oci:$TMP/x:bench/IMAGE:latest docker://127.0.0.1:PORT/restored-twohop/"
                 "bench/IMAGE-rN:latest`. skopeo's blob-info cache is emptied before each run: "
                 "it remembers the benchmark's source repository and would otherwise mount "
                 "the blobs from it instead of pushing them.")
        L.append("")
        L.append("| image | ecr-vault MB/s | two-hop MB/s | ecr-vault / two-hop | ecr-vault wall s "
                 "| two-hop wall s | peak RSS median / max (MiB) | write_bytes max | bytes pushed "
                 "(min) | blobs mounted or present (max) |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|")
        for n, v in rs.items():
            L.append(f"| {n} | **{fmt(v['ev'])}** | {fmt(v['twohop'])} | "
                     f"{ratio_str(v['vs_twohop'])} | {fmt(v['ev_wall'], '.2f')} | "
                     f"{fmt(v['th_wall'], '.2f')} | {fmt(v['rss_med'], '.1f')} / "
                     f"{fmt(v['rss_max'], '.1f')} | {v['disk_max']} | {v['pushed_min']:,} | "
                     f"{v['mounted_max'] + v['present_max']} |")
        L.append("")
        L.append("CPU seconds per GB restored (medians), as in *Where the CPU goes*:")
        L.append("")
        L += cpu_table(rs)
    L.append("")
    L.append("## What each column runs")
    L.append("")
    L.append("All against the stack from `ecr-vault-stack up` (registry with basic auth, "
             f"SeaweedFS `weed mini`), bucket `{b.bucket}`: Object Lock enabled, versioned. "
             "**All three methods write into this same locked bucket** (different prefixes), so "
             "the S3 server does the same versioned-bucket work for each. Objects are purged "
             "between repetitions (with governance bypass) to bound disk use.")
    L.append("")
    L.append("- **ecr-vault** (release build, default part size / parallelism):")
    L.append("  ```")
    L.append("  ecr-vault backup --registry http://127.0.0.1:PORT --username U --password P \\")
    L.append("    --vault s3://vault/ev/rN-IMAGE --repository bench/IMAGE \\")
    L.append("    --lock-mode governance --retention-days 1 --lock-slack-days 0 --output json")
    L.append("  ```")
    L.append("  Governance (instead of the default compliance) only so the bench can purge; "
             "the requests are the same. Each repetition writes into a fresh prefix, so every "
             "blob is copied.")
    L.append("- **two-hop** (what users would otherwise script), both hops timed together:")
    L.append("  ```")
    L.append("  skopeo copy --src-tls-verify=false --src-creds U:P docker://127.0.0.1:PORT/bench/IMAGE:latest dir:$TMP/x")
    L.append("  aws --endpoint-url http://127.0.0.1:S3PORT s3 cp --recursive $TMP/x s3://vault/twohop/rN-IMAGE/")
    L.append("  ```")
    L.append("  aws CLI v1 with its defaults (10 threads, 8 MiB parts). `$TMP` is on the same "
             "disk as the servers; with 24 GB of RAM the intermediate files mostly stay in the "
             "page cache, which flatters this path.")
    L.append("- **raw limit** = the slower of two plain transfers of the same bytes, each on its "
             "own:")
    L.append("  - raw GET: `curl -s -f -u U:P -o /dev/null http://127.0.0.1:PORT/v2/bench/IMAGE/blobs/DIGEST`, "
             "one blob after the other, summed.")
    L.append("  - raw upload: `ecr-vault-bench upload --bucket vault --key raw/… --size N "
             "--part-size-mib 16 --parallel 6` per layer: one plain multipart upload with the "
             "same Rust SDK, part size and parallelism as ecr-vault, parts sliced from one "
             "in-memory buffer, no checksum or lock headers, no hashing. This is chosen over "
             "`curl … | aws s3 cp -` because aws CLI v1 streaming from stdin is single-threaded "
             "Python and would measure the CLI, not the server: the raw figure is meant to be "
             "the ceiling for any client on this machine.")
    L.append("  - The raw limit does not include the CPU the two transfers would take from each "
             "other when run at once on 2 cores, nor the sha256 work (client and server side) "
             "that ecr-vault does and must do; it is a ceiling, not a like-for-like client.")
    L.append("- **rerun**: the ecr-vault command again, same prefix.")
    L.append("- Measured order within a repetition rotates (ecr-vault / two-hop / raw first), so "
             "no method always runs on a warmer or colder machine.")
    L.append("")
    if b.perf:
        L.append("## CPU profile of one headline backup (`perf stat`, extra run)")
        L.append("")
        L.append("```")
        L.append(b.perf)
        L.append("```")
        L.append("")
    L.append("## Machine")
    L.append("")
    for k, v in machine.items():
        L.append(f"- {k}: {v}")
    L.append("")
    L.append("Note: a shared, virtualised machine; the registry, SeaweedFS, the clients and "
             "the measured process all share its CPUs, so absolute MB/s are a property of this "
             "box, and the ratios are the point.")
    L.append("")
    L.append("## Versions")
    L.append("")
    for k, v in vers.items():
        L.append(f"- {k}: {v}")
    L.append("")
    L.append("## Every measurement")
    L.append("")
    L.append("<details><summary>Per-run figures</summary>")
    L.append("")
    L.append("| rep | image | method | bytes | wall s | MB/s | peak RSS MiB | write_bytes | "
             "bytesWritten | client / weed / registry CPU s | foreign load | detail |")
    L.append("|---:|---|---|---:|---:|---:|---:|---:|---:|---|---:|---|")
    for x in b.runs + (b.restore.get("rows", []) if b.restore else []):
        detail = ""
        if "skopeo_s" in x:
            detail = f"skopeo {x['skopeo_s']:.2f}s + aws {x['aws_s']:.2f}s"
        L.append(f"| {x['rep']} | {x['image']} | {x['method']} | {x['bytes']:,} | "
                 f"{x['wall_s']:.2f} | {mb(x['bytes']) / x['wall_s']:.0f} | "
                 f"{fmt(x.get('maxrss_mib'), '.1f')} | {x.get('write_bytes', '–')} | "
                 f"{x.get('bytes_written', '–')} | {fmt(x.get('cpu_client_s'), '.2f')} / "
                 f"{fmt(x.get('cpu_weed_s'), '.2f')} / {fmt(x.get('cpu_registry_s'), '.2f')} | "
                 f"{fmt(x.get('foreign_cores'), '.2f')} | {detail} |")
    L.append("")
    L.append("Image push times (generation + streamed upload, not a measured path): " + ", ".join(
        f"{n} {v['push_s']:.1f}s" for n, v in b.pushed.items()) + ".")
    L.append("")
    L.append("</details>")
    L.append("")
    md.write_text("\n".join(L))


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--reps", type=int, default=0)
    p.add_argument("--bin-dir", default=str(REPO_ROOT / "target" / "release"))
    p.add_argument("--work", required=True)
    p.add_argument("--md", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--png", default=str(REPO_ROOT / "docs" / "benchmarks.png"))
    p.add_argument("--json", default="", help="also dump every measurement here")
    p.add_argument("--no-profile", action="store_true", help="skip the CPU profile section")
    p.add_argument("--profile-only", action="store_true",
                   help="only (re)do the CPU profile section of an existing --md file")
    a = p.parse_args()
    b = Bench(a)
    md, png = Path(a.md), Path(a.png)
    import cpuprofile as prof
    if a.profile_only:
        b.images = b.images[:1]
        b.push_images()
        prof.splice(md, prof.profile(b))
        log(f"updated the profile section of {md}")
        return
    machine, vers = machine_info(), versions(Path(a.bin_dir))
    b.run()
    s = summarize(b)
    rs = summarize_restore(b)
    chart(b, s, rs, png)
    write_markdown(b, s, rs, md, png, machine, vers)
    if not a.no_profile:
        prof.splice(md, prof.profile(b))
    if a.json:
        Path(a.json).write_text(json.dumps({"runs": b.runs, "summary": s, "restore": b.restore,
                                            "restore_summary": rs,
                                            "pushed": b.pushed}, indent=1, default=str))
    log(f"wrote {md} and {png}")
    for n, v in s.items():
        log(f"{n}: ecr-vault {fmt(v['ev'])} MB/s, two-hop {fmt(v['twohop'])}, raw {fmt(v['raw'])}"
            f" (GET {fmt(v['get'])}, upload {fmt(v['upload'])}); x{fmt(v['vs_twohop'], '.2f')} "
            f"two-hop, {fmt(v['vs_raw'] and v['vs_raw'] * 100)}% raw; rss {fmt(v['rss_med'])} MiB")


if __name__ == "__main__":
    main()
