"""100,000-image benchmark (run it through `bash scripts/bench-scale.sh`, which starts the stack).

Issue 17 item 3. On the stack from `ecr-vault-stack up` (SeaweedFS as the vault, moto for SQS):

1. seeds a docker-registry filesystem root directly (bench/scale_seed.py: 2,000 repositories x
   50 images by default) and serves it with its own `docker-registry` (no auth) on 127.0.0.1;
2. checks the seeded registry: `/v2/_catalog` pagination lists every repository, and
   `skopeo inspect` of a sample of tags gives the digests the layout holds;
3. measures, one run each, with the load average before and after:
   - the inline first backup (release `ecr-vault backup`): wall time, peak RSS, CPU;
   - a no-change rerun, through request-counting proxies (`ecr-vault-bench count`): wall time,
     peak RSS, blob bytes, registry requests per image and per repository;
   - `ecr-vault plan`, counted the same way;
   - the snapshot document: its size, and `ecr-vault show latest` (GET + parse) time;
   - the fan-out first backup into a fresh vault prefix: one scheduled invocation
     (`trigger::scheduled` with the work queue on moto's SQS) and WORKERS warm worker
     processes (`trigger::queued`, the function's SQS path) until the run is finalised or
     the time budget runs out (tests/bin/fanout_bench.rs); per invocation its wall time
     against the 900 s deadline and the worker's peak RSS; the run manifest's size and what
     one worker pays to read it and to LIST the run's markers, at the start and the end;
4. writes the "100,000 images" section of docs/benchmarks.md (between the markers below).

Peak RSS is GNU time's `%M` (the kernel's `ru_maxrss`) for the CLI, VmHWM for the workers.
Not run by CI: it takes most of an hour and a few GB of disk.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mdsection  # noqa: E402
import scale_seed  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- scale-100k:begin -->"
END = "<!-- scale-100k:end -->"
MiB = 1 << 20

GOAL_RERUN_S = 60
GOAL_RSS_MIB = 256
GOAL_PLAN_S = 60
WORKER_DEADLINE_S = 900


def log(msg: str) -> None:
    print(f"[scale {dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def load() -> str:
    return " / ".join(Path("/proc/loadavg").read_text().split()[:3])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def timed(cmd: list[str], env: dict, out: Path, stdout_file: Path | None = None) -> dict:
    """Runs cmd under GNU time; returns wall, peak RSS, CPU, exit code, stdout."""
    tfile = out.with_suffix(".time")
    full = ["/usr/bin/time", "-o", str(tfile), "-f", "%e %M %U %S", *cmd]
    before = load()
    with open(out.with_suffix(".stderr"), "w") as err:
        r = subprocess.run(full, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    after = load()
    # GNU time writes "Command exited with non-zero status N" first when it fails.
    e, m, u, s = tfile.read_text().strip().splitlines()[-1].split()
    if stdout_file:
        stdout_file.write_text(r.stdout)
    return {"exit": r.returncode, "wall_s": float(e), "maxrss_kib": int(m),
            "cpu_s": float(u) + float(s), "load_before": before, "load_after": after,
            "stdout": r.stdout}


def start_registry(root: Path, work: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    cfg = work / "registry.yml"
    cfg.write_text(
        "version: 0.1\nlog:\n  level: warn\n  accesslog:\n    disabled: true\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root}\n  delete:\n    enabled: true\n"
        "  maintenance:\n    uploadpurging:\n      enabled: false\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: scale-bench\n")
    logf = open(work / "registry.log", "w")
    p = subprocess.Popen(["docker-registry", "serve", str(cfg)], stdout=logf,
                         stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(f"{url}/v2/", timeout=2)
            return p, url
        except OSError:
            time.sleep(0.1)
    raise RuntimeError("docker-registry did not start; see registry.log")


def catalog(url: str) -> tuple[list[str], int]:
    """Every repository through `_catalog` pagination (n=1000, following Link); pages."""
    repos: list[str] = []
    nxt, pages = "/v2/_catalog?n=1000", 0
    while nxt:
        with urllib.request.urlopen(url + nxt, timeout=60) as r:
            repos += json.load(r)["repositories"]
            link = r.headers.get("Link") or ""
        pages += 1
        m = re.match(r"<([^>]+)>", link)
        nxt = m.group(1) if m else ""
    return repos, pages


def verify_seed(url: str, root: Path, prefix: str, repos: int, per_repo: int) -> dict:
    names, pages = catalog(url)
    want = {f"{prefix}/svc{r:04d}" for r in range(repos)}
    if set(names) != want:
        raise RuntimeError(f"catalog lists {len(names)} repositories, expected {repos}")
    samples = sorted({(0, 0), (repos // 2, per_repo // 2), (repos - 1, per_repo - 1),
                      (repos // 3, 1), (2 * repos // 3, per_repo - 2)})
    checked = []
    v2 = root / "docker" / "registry" / "v2" / "repositories"
    for r, i in samples:
        repo, tag = f"{prefix}/svc{r:04d}", f"v{i:03d}"
        want_digest = (v2 / repo / "_manifests" / "tags" / tag / "current" / "link").read_text()
        out = subprocess.run(["skopeo", "inspect", "--tls-verify=false",
                              f"docker://{url.split('://')[1]}/{repo}:{tag}"],
                             capture_output=True, text=True, check=True)
        got = json.loads(out.stdout)
        if got["Digest"] != want_digest or len(got["RepoTags"]) != per_repo:
            raise RuntimeError(f"skopeo inspect {repo}:{tag}: {got['Digest']} with "
                               f"{len(got['RepoTags'])} tags, expected {want_digest}")
        checked.append(f"{repo}:{tag}")
    return {"catalog_repositories": len(names), "catalog_pages": pages, "skopeo_checked": checked}


def du(path: Path) -> int:
    r = subprocess.run(["du", "-sk", str(path)], capture_output=True, text=True)
    return int(r.stdout.split()[0]) * 1024 if r.returncode == 0 else 0


def backup_cmd(bin_dir: Path, vault: str, prefix: str) -> list[str]:
    return [str(bin_dir / "ecr-vault"), "backup", "--vault", vault,
            "--repository", f"{prefix}/**", "--retention-days", "3", "--lock-slack-days", "2",
            "--lock-mode", "governance", "--image-concurrency", "16", "--blob-concurrency", "16",
            "--no-referrers", "--output", "json"]


def counted(bin_dir: Path, env: dict, reg_url: str, cmd: list[str], out: Path) -> dict:
    """cmd under GNU time, behind counting proxies for S3 and the registry."""
    tfile = out.with_suffix(".time")
    full = [str(bin_dir / "ecr-vault-bench"), "count", "--s3", env["AWS_ENDPOINT_URL_S3"],
            "--registry", reg_url, "--",
            "/usr/bin/time", "-o", str(tfile), "-f", "%e %M %U %S", *cmd]
    before = load()
    with open(out.with_suffix(".stderr"), "w") as err:
        r = subprocess.run(full, env=env, stdout=subprocess.PIPE, stderr=err, text=True)
    after = load()
    if r.returncode != 0:
        raise RuntimeError(f"count {cmd[1]} failed ({r.returncode}); see {out}.stderr")
    res = json.loads(r.stdout.strip().splitlines()[-1])
    e, m, u, s = tfile.read_text().strip().splitlines()[-1].split()
    res.update({"cmd_wall_s": float(e), "maxrss_kib": int(m), "cpu_s": float(u) + float(s),
                "load_before": before, "load_after": after})
    return res


def snapshot_doc(env: dict, bin_dir: Path, vault: str, out: Path) -> dict:
    """The newest snapshot's size, and `ecr-vault show latest --output json` time."""
    bucket, _, prefix = vault.removeprefix("s3://").partition("/")
    r = subprocess.run(["aws", "s3api", "list-objects-v2", "--bucket", bucket,
                        "--prefix", f"{prefix}/snapshots/", "--output", "json"],
                       capture_output=True, text=True, env=env, check=True)
    objs = json.loads(r.stdout or "{}").get("Contents", [])
    newest = max(objs, key=lambda o: o["Key"]) if objs else {"Key": None, "Size": 0}
    show = timed([str(bin_dir / "ecr-vault"), "show", "--vault", vault, "latest",
                  "--output", "json"], env, out)
    show.pop("stdout", None)
    return {"key": newest["Key"], "bytes": newest["Size"], "snapshots": len(objs),
            "show": show}


def fanout(a, bin_dir: Path, fan_bin: Path, env: dict, reg_url: str, vault: str,
           prefix: str, work: Path) -> dict:
    def fb(*args: str) -> dict:
        r = subprocess.run([str(fan_bin), *args], capture_output=True, text=True, env=env)
        if r.returncode != 0:
            raise RuntimeError(f"fanout-bench {args[0]} failed: {r.stderr[-2000:]}")
        return json.loads(r.stdout.strip().splitlines()[-1])

    q = fb("queue", "--name", f"scale-{os.getpid()}", "--max-receives", "5",
           "--visibility", "300")
    common = ["--registry", reg_url, "--vault", vault, "--queue-url", q["queue_url"],
              "--repository", f"{prefix}/**"]
    log("fan-out: scheduled invocation (plan, run manifest, work items)")
    sched = timed([str(fan_bin), "schedule", *common], env, work / "fan-schedule")
    if sched["exit"] != 0:
        raise RuntimeError(f"schedule failed; see {work}/fan-schedule.stderr")
    sched.update(json.loads(sched.pop("stdout").strip().splitlines()[-1]))
    log(f"fan-out scheduled: {sched}")
    if not sched.get("fanned_out"):
        raise RuntimeError("the scheduled run did not fan out")
    run = sched["run"]
    probe_start = fb("probe", "--vault", vault, "--run", run)
    log(f"probe at start: {probe_start}")
    started = time.time()
    until = int(started + a.fanout_budget_s)
    procs = []
    for w in range(a.workers):
        f = work / f"fan-worker{w}.jsonl"
        procs.append((f, subprocess.Popen(
            ["/usr/bin/time", "-o", str(work / f"fan-worker{w}.time"), "-f", "%e %M %U %S",
             str(fan_bin), "worker", *common, "--out", str(f), "--batch", str(a.batch),
             "--timeout-s", str(WORKER_DEADLINE_S), "--idle-s", "20", "--until", str(until)],
            env=env, stdout=subprocess.DEVNULL,
            stderr=open(work / f"fan-worker{w}.stderr", "w"))))
    stop = threading.Event()

    def progress() -> None:
        while not stop.wait(60):
            lines = sum(len(f.read_text().splitlines()) for f, _ in procs if f.exists())
            log(f"fan-out: {lines} invocations so far, load {load()}")
    threading.Thread(target=progress, daemon=True).start()
    load_before = load()
    for _, p in procs:
        p.wait()
    stop.set()
    elapsed = time.time() - started
    load_after = load()
    inv = []
    for f, _ in procs:
        if f.exists():
            inv += [json.loads(x) for x in f.read_text().splitlines() if x.strip()]
    inv.sort(key=lambda x: x["t"])
    finalised = [x["finalised"] for x in inv if x.get("finalised")]
    worker_rss = []
    for w in range(a.workers):
        t = (work / f"fan-worker{w}.time").read_text().strip().splitlines()[-1].split()
        worker_rss.append(int(t[1]))
    probe_end = fb("probe", "--vault", vault, "--run", run)
    log(f"probe at end: {probe_end}")
    walls = [x["wall_s"] for x in inv]
    tenth = max(1, len(inv) // 10)
    return {
        "schedule": sched,
        "probe_start": probe_start,
        "probe_end": probe_end,
        "workers": a.workers,
        "batch": a.batch,
        "budget_s": a.fanout_budget_s,
        "elapsed_s": elapsed,
        "invocations": len(inv),
        "items": sum(x["items"] for x in inv),
        "done": sum(x["done"] for x in inv),
        "failed_deliveries": sum(x["failed"] for x in inv),
        "max_invocation_s": max(walls, default=0.0),
        "first_tenth_mean_s": sum(walls[:tenth]) / tenth if walls else 0.0,
        "last_tenth_mean_s": sum(walls[-tenth:]) / tenth if walls else 0.0,
        "over_deadline": sum(1 for w in walls if w > WORKER_DEADLINE_S),
        "worker_maxrss_kib": worker_rss,
        "finalised": finalised[0] if finalised else None,
        "load_before": load_before,
        "load_after": load_after,
    }


def fmt_s(x: float) -> str:
    return f"{x:,.1f} s"


def mib(kib: int) -> str:
    return f"{kib / 1024:,.0f} MiB"


def verdict(ok: bool, n: int = 100_000) -> str:
    if n != 100_000:
        return f"met at {n:,} images" if ok else f"**missed** at {n:,} images"
    return "**met**" if ok else "**missed**"


def parts(p: dict) -> str:
    """Which parts of a many-part goal were met, when not all were."""
    if all(p.values()):
        return ""
    return " (" + ", ".join(f"{k} {'met' if ok else '**missed**'}" for k, ok in p.items()) + ")"


def wall_at_100k(x: float, n: int) -> str:
    """The wall time's linear projection, for a smaller run; nothing at full size."""
    return "" if n == 100_000 else f"; wall time{at_100k(x, n)} s"


def at_100k(x: float, n: int) -> str:
    """A linear projection to 100,000 images, for a smaller run."""
    return "" if n == 100_000 else f" (linear to 100,000: ~{x * 100_000 / n:,.0f})"


def section(r: dict) -> str:
    seed, ver = r["seed"], r["verify"]
    n, repos = seed["images"], seed["repositories"]
    L = [BEGIN, f"## {n:,} images", ""]
    L.append(
        f"Measured {r['when']} by `bash scripts/bench-scale.sh` (bench/scale.py) on {r['machine']}, "
        "shared with other work: the load average (1/5/15 min) is given for every run. One run "
        "each. Not part of CI.")
    L.append("")
    L.append(
        f"**Fixture.** {repos:,} repositories × {n // repos} images, written straight into a "
        f"docker-registry filesystem root by `bench/scale_seed.py` in {seed['seconds']:.0f} s "
        f"({seed['files']:,} files, {r['fixture_bytes'] / 2**30:.1f} GiB on disk): every image "
        "an OCI manifest with its own config (~300 bytes) and 2 or 3 small layers: a base layer "
        "shared by all repositories (16 of 4 KiB), a layer shared within the repository (5 per "
        "repository, 2 KiB), and for every fifth image one of its own (1 KiB); "
        f"{seed['distinct_blobs']:,} distinct blobs and {seed['manifests']:,} manifests, "
        f"{seed['blob_bytes'] / 1e6:,.0f} MB. Served by `docker-registry` (distribution 2.8, no "
        f"auth) on 127.0.0.1. Checked before the runs: `/v2/_catalog` pagination (n=1000, "
        f"{ver['catalog_pages']} pages) lists all {ver['catalog_repositories']:,} repositories, "
        f"and `skopeo inspect` of {len(ver['skopeo_checked'])} sample tags gives the layout's "
        "digests. Vault: SeaweedFS (`ecr-vault-stack up`), governance locks.")
    if n != 100_000:
        L.append("")
        L.append(f"This run has {n:,} images, not 100,000; the goals are the issue's, stated "
                 "for 100,000.")
    L.append("")
    first, rerun, plan, snap = r["first"], r["rerun"], r["plan"], r["snapshot"]
    rc, pc = rerun["report"]["counts"], plan
    reg_allow = n + repos
    reg_req = rerun["registry"]["requests"]
    L.append("| figure | goal | measured | load before → after |")
    L.append("|---|---|---|---|")
    L.append(f"| inline CLI first backup | time and peak RSS reported | {fmt_s(first['wall_s'])}"
             f"{at_100k(first['wall_s'], n)}, "
             f"{mib(first['maxrss_kib'])} peak RSS, {first['cpu_s']:,.0f} CPU-s; "
             f"{first['report']['counts']['imagesCopied']:,} images copied | "
             f"{first['load_before']} → {first['load_after']} |")
    catalog_req = sum(v for k, v in rerun["registry"]["by_class"].items() if "catalog" in k)
    # The listing's `_catalog` pages come on top of the per-repository and per-image budget.
    rerun_parts = {"time": rerun["cmd_wall_s"] <= GOAL_RERUN_S,
                   "RSS": rerun["maxrss_kib"] <= GOAL_RSS_MIB * 1024,
                   "blob bytes": rc["bytesWritten"] == 0,
                   "requests": reg_req - catalog_req <= reg_allow}
    ok_rerun = all(rerun_parts.values())
    L.append(f"| no-change rerun | ≤ {GOAL_RERUN_S} s, peak RSS ≤ {GOAL_RSS_MIB} MiB, 0 blob bytes, "
             f"≤ {reg_allow:,} registry requests (1 per image + 1 per repository) | "
             f"{fmt_s(rerun['cmd_wall_s'])}, {mib(rerun['maxrss_kib'])}, "
             f"{rc['bytesWritten']:,} bytes written, {reg_req:,} registry requests "
             f"({reg_req - catalog_req:,} + {catalog_req} `_catalog` pages): "
             f"{verdict(ok_rerun, n)}{parts(rerun_parts)}{wall_at_100k(rerun['cmd_wall_s'], n)} | "
             f"{rerun['load_before']} → {rerun['load_after']} |")
    L.append(f"| `plan` | ≤ {GOAL_PLAN_S} s | {fmt_s(plan['cmd_wall_s'])}, {mib(plan['maxrss_kib'])}: "
             f"{verdict(plan['cmd_wall_s'] <= GOAL_PLAN_S, n)}"
             f"{wall_at_100k(plan['cmd_wall_s'], n)} | "
             f"{plan['load_before']} → {plan['load_after']} |")
    fo = r.get("fanout")
    if fo:
        done = fo["finalised"] is not None
        rss = max(fo["worker_maxrss_kib"], default=0)
        ok = done and fo["over_deadline"] == 0 and rss <= GOAL_RSS_MIB * 1024
        what = (f"finalised in {fmt_s(fo['elapsed_s'])} (snapshot of "
                f"{fo['finalised']['images']:,} images)" if done else
                f"**not finished** in the {fo['budget_s']:,} s budget: {fo['done']:,} of "
                f"{fo['schedule']['queued']:,} work items done")
        L.append(f"| fan-out first backup | completes, no worker invocation over its deadline, "
                 f"peak RSS ≤ {GOAL_RSS_MIB} MiB per worker | {what}; longest invocation "
                 f"{fmt_s(fo['max_invocation_s'])} of {WORKER_DEADLINE_S} s, "
                 f"{fo['over_deadline']} over; worker peak RSS {mib(rss)}: {verdict(ok, n)} | "
                 f"{fo['load_before']} → {fo['load_after']} |")
    if r.get("fanout_error"):
        L.append(f"| fan-out first backup | completes | **did not run through**: "
                 f"{r['fanout_error'][:300]} | |")
    L.append("")
    L.append("Details:")
    L.append("")
    L.append(
        f"- **No-change rerun** (through the counting proxies of `ecr-vault-bench count`; the "
        f"figure is the CLI process's own wall time, the proxies add to the machine's load): "
        f"{rc['imagesUnchanged']:,} images unchanged; registry "
        + ", ".join(f"`{k}` {v:,}" for k, v in rerun["registry"]["by_class"].items())
        + "; S3 " + ", ".join(f"`{k}` {v:,}" for k, v in rerun["s3"]["by_class"].items())
        + f". Registry bytes received: {rerun['registry']['bytes_down']:,} (no blob GET); "
        f"CPU {rerun['cpu_s']:.1f} s.")
    L.append(
        f"- **`plan`**: registry " + ", ".join(f"`{k}` {v:,}" for k, v in
                                          plan["registry"]["by_class"].items())
        + "; S3 " + ", ".join(f"`{k}` {v:,}" for k, v in plan["s3"]["by_class"].items())
        + f"; CPU {plan['cpu_s']:.1f} s.")
    L.append(
        f"- **Snapshot document**: {snap['bytes'] / MiB:,.1f} MiB of JSON for {n:,} images "
        f"(`{Path(snap['key']).name if snap['key'] else '?'}`); `ecr-vault show latest --output "
        f"json` (GET, parse, print) takes {fmt_s(snap['show']['wall_s'])} at "
        f"{mib(snap['show']['maxrss_kib'])}, against the rerun's {fmt_s(rerun['cmd_wall_s'])}.")
    if fo:
        ps, pe = fo["probe_start"], fo["probe_end"]
        L.append(
            f"- **Fan-out** (tests/bin/fanout_bench.rs drives the engine's `trigger::scheduled` "
            f"and `trigger::queued`, the backup function's scheduled and SQS paths, without the "
            f"Lambda runtime; the queue and its DLQ on moto): the scheduled invocation took "
            f"{fmt_s(fo['schedule']['wall_s'])} at {mib(fo['schedule']['maxrss_kib'])} and "
            f"queued {fo['schedule']['queued']:,} work items. Then {fo['workers']} warm worker "
            f"processes, {fo['batch']} items per invocation (the template's WorkerBatchSize "
            f"default), for {fmt_s(fo['elapsed_s'])}: {fo['invocations']:,} invocations, "
            f"{fo['done']:,} images done, {fo['failed_deliveries']:,} deliveries to retry. "
            f"Mean invocation {fo['first_tenth_mean_s']:.2f} s over the first tenth and "
            f"{fo['last_tenth_mean_s']:.2f} s over the last tenth. Worker peak RSS "
            + ", ".join(mib(k) for k in fo["worker_maxrss_kib"]) + ".")
        L.append(
            f"- **The run manifest** every worker invocation reads: "
            f"{(ps['manifest_bytes'] or 0) / MiB:,.1f} MiB for {ps['manifest_expected']:,} "
            f"expected images, {ps['manifest_get_parse_s']:.2f} s to GET and parse at the start "
            f"({pe['manifest_get_parse_s']:.2f} s at the end). The LIST of the run's markers each "
            f"invocation does after writing its own: {ps['markers']:,} keys in "
            f"{ps['markers_list_s']:.2f} s at the start, {pe['markers']:,} keys in "
            f"{pe['markers_list_s']:.2f} s at the end.")
    L.append("")
    L.append(END)
    return "\n".join(L) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--work", required=True, help="scratch directory (fixture, logs)")
    p.add_argument("--bin-dir", default=str(REPO_ROOT / "target" / "release"))
    p.add_argument("--repos", type=int, default=2000)
    p.add_argument("--per-repo", type=int, default=50)
    p.add_argument("--prefix", default="scale")
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--fanout-budget-s", type=int, default=1800)
    p.add_argument("--no-fanout", action="store_true")
    p.add_argument("--md", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", default="", help="also dump every measurement here")
    p.add_argument("--render", default="",
                   help="only write the section again from a --json dump of an earlier run")
    a = p.parse_args()
    if a.render:
        mdsection.splice(Path(a.md), section(json.loads(Path(a.render).read_text())), BEGIN, END)
        return
    bin_dir, work = Path(a.bin_dir), Path(a.work)
    fan_bin = bin_dir / "ecr-vault-fanout-bench"
    env = dict(os.environ)
    for k in ("ECR_VAULT_REGISTRY_USERNAME", "ECR_VAULT_REGISTRY_PASSWORD"):
        env.pop(k, None)
    env["AWS_ENDPOINT_URL_SQS"] = env["ECR_VAULT_TEST_MOTO_ENDPOINT"]
    bucket = env.get("ECR_VAULT_TEST_BUCKET", "vault")
    stamp = dt.datetime.now().strftime("%H%M%S")
    res: dict = {"machine": f"{os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}",
                 "when": f"{dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC"}

    def dump() -> None:
        if a.json:
            Path(a.json).write_text(json.dumps(res, indent=1))

    root = work / "registry"
    log(f"seeding {a.repos} x {a.per_repo} images into {root} (load {load()})")
    t = time.monotonic()
    res["seed"] = scale_seed.seed(root, a.prefix, a.repos, a.per_repo)
    res["seed"]["seconds"] = time.monotonic() - t
    res["fixture_bytes"] = du(root)
    log(f"seeded: {res['seed']}, {res['fixture_bytes'] / 2**30:.2f} GiB")
    reg, reg_url = start_registry(root, work)
    try:
        res["verify"] = verify_seed(reg_url, root, a.prefix, a.repos, a.per_repo)
        log(f"verified: {res['verify']}")
        env["ECR_VAULT_REGISTRY"] = reg_url
        vault = f"s3://{bucket}/scale-{stamp}"

        log(f"inline first backup (load {load()})")
        first = timed(backup_cmd(bin_dir, vault, a.prefix), env, work / "first")
        first["report"] = json.loads(first.pop("stdout"))
        if first["exit"] != 0:
            raise RuntimeError(f"first backup exited {first['exit']}; see {work}/first.stderr")
        res["first"] = first
        log(f"first backup: {first['wall_s']} s, {first['maxrss_kib']} KiB, "
            f"counts {first['report']['counts']}")
        dump()

        log(f"no-change rerun (load {load()})")
        rerun = counted(bin_dir, env, reg_url, backup_cmd(bin_dir, vault, a.prefix),
                        work / "rerun")
        rerun["report"] = json.loads(rerun.pop("stdout"))
        res["rerun"] = rerun
        log(f"rerun: {rerun['cmd_wall_s']} s, {rerun['maxrss_kib']} KiB, registry "
            f"{rerun['registry']['requests']}, counts {rerun['report']['counts']}")
        dump()

        log(f"plan (load {load()})")
        plan = counted(bin_dir, env, reg_url,
                       [str(bin_dir / "ecr-vault"), "plan", "--vault", vault,
                        "--repository", f"{a.prefix}/**", "--retention-days", "3",
                        "--lock-slack-days", "2", "--output", "json"], work / "plan")
        plan.pop("stdout", None)
        res["plan"] = plan
        log(f"plan: {plan['cmd_wall_s']} s, {plan['maxrss_kib']} KiB")
        res["snapshot"] = snapshot_doc(env, bin_dir, vault, work / "show")
        log(f"snapshot: {res['snapshot']}")
        dump()

        if not a.no_fanout:
            try:
                res["fanout"] = fanout(a, bin_dir, fan_bin, env, reg_url,
                                       f"s3://{bucket}/scale-fan-{stamp}", a.prefix, work)
                log(f"fan-out: { {k: v for k, v in res['fanout'].items() if 'probe' not in k} }")
            except (RuntimeError, OSError, ValueError, KeyError) as e:
                # The other figures stand; the section says the fan-out did not run through.
                log(f"fan-out failed: {e}")
                res["fanout_error"] = str(e)
            dump()
    finally:
        reg.terminate()
        reg.wait()
        if not os.environ.get("SCALE_KEEP_FIXTURE"):
            shutil.rmtree(root, ignore_errors=True)
    mdsection.splice(Path(a.md), section(res), BEGIN, END)
    log(f"wrote the scale section of {a.md}")


if __name__ == "__main__":
    main()
