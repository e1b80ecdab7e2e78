"""No-change rerun benchmark (run it through `bash scripts/bench.sh --rerun-only`).

Pushes 1,000 small images in 100 repositories (5,000 distinct blobs, 50 % of layer references
shared; the shape of tests/scale.rs) into the stack's registry, backs them up once with the
release `ecr-vault` CLI, then runs the same backup again REPS times with nothing changed. Each
run goes through request-counting proxies in front of the registry and SeaweedFS
(`ecr-vault-bench count`), so requests and bytes come from the wire.

Writes only the "No-change rerun over 1,000 images" section of docs/benchmarks.md, between
the markers below; the rest of the file belongs to bench.py.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import re
import statistics
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import mdsection  # noqa: E402

REPO_ROOT = Path(__file__).resolve().parent.parent
BEGIN = "<!-- rerun-1000:begin -->"
END = "<!-- rerun-1000:end -->"


def log(msg: str) -> None:
    print(f"[rerun {dt.datetime.now():%H:%M:%S}] {msg}", file=sys.stderr, flush=True)


def run_json(cmd: list[str], env: dict) -> dict:
    r = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if r.returncode != 0:
        raise RuntimeError(f"{cmd[:3]} failed ({r.returncode}): {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


def counted_backup(bin_dir: Path, env: dict, vault: str, prefix: str) -> dict:
    cmd = [
        str(bin_dir / "ecr-vault-bench"), "count",
        "--s3", env["AWS_ENDPOINT_URL_S3"], "--registry", env["ECR_VAULT_TEST_REGISTRY_URL"],
        "--",
        str(bin_dir / "ecr-vault"), "backup", "--vault", vault,
        "--repository", f"{prefix}/**", "--retention-days", "3", "--lock-slack-days", "2",
        "--lock-mode", "governance", "--image-concurrency", "16", "--blob-concurrency", "16",
        "--no-referrers", "--output", "json",
    ]
    out = run_json(cmd, env)
    if out["exit"] != 0:
        raise RuntimeError(f"ecr-vault backup exited {out['exit']}")
    out["report"] = json.loads(out.pop("stdout"))
    return out


def section(seed: dict, first: dict, reruns: list[dict], machine: str) -> str:
    n = seed["images"]
    walls = [r["wall_s"] for r in reruns]
    s3_reqs = [r["s3"]["requests"] for r in reruns]
    reg_reqs = [r["registry"]["requests"] for r in reruns]
    moved = [r["report"]["counts"]["bytesWritten"] for r in reruns]
    up = [r["s3"]["bytes_up"] for r in reruns]
    last = reruns[-1]
    L = [BEGIN, "## No-change rerun over 1,000 images", ""]
    L.append(
        f"Measured {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC on {machine} by "
        "`bash scripts/bench.sh --rerun-only` (bench/rerun.py): "
        f"{n} images in {seed['repositories']} repositories, {seed['distinct_blobs']} distinct "
        f"blobs ({seed['blob_bytes']:,} bytes), 50 % of layer references shared; source: the "
        "local distribution registry (generic-registry listing: `_catalog`, tag lists, one "
        "HEAD per tag); vault: SeaweedFS. The release `ecr-vault backup` CLI runs once, then "
        f"{len(reruns)} more times with nothing changed; every request goes through a counting "
        "proxy (`ecr-vault-bench count`)."
    )
    L.append("")
    L.append("| | first backup | no-change rerun (median of "
             f"{len(reruns)}) |")
    L.append("|---|---:|---:|")
    L.append(f"| wall time | {first['wall_s']:.2f} s | {statistics.median(walls):.2f} s "
             f"(min {min(walls):.2f}, max {max(walls):.2f}) |")
    L.append(f"| S3 requests | {first['s3']['requests']:,} | {statistics.median(s3_reqs):,.0f} |")
    L.append(f"| S3 requests per image | {first['s3']['requests'] / n:.2f} | "
             f"{statistics.median(s3_reqs) / n:.4f} |")
    L.append(f"| registry requests | {first['registry']['requests']:,} | "
             f"{statistics.median(reg_reqs):,.0f} |")
    L.append(f"| registry requests per image | {first['registry']['requests'] / n:.2f} | "
             f"{statistics.median(reg_reqs) / n:.2f} |")
    L.append(f"| bytes written to the vault (report) | "
             f"{first['report']['counts']['bytesWritten']:,} | {max(moved):,} |")
    L.append(f"| request bytes sent to S3 (wire) | {first['s3']['bytes_up']:,} | "
             f"{statistics.median(up):,.0f} |")
    L.append(f"| blob bytes from the registry (wire, all responses) | "
             f"{first['registry']['bytes_down']:,} | "
             f"{statistics.median([r['registry']['bytes_down'] for r in reruns]):,.0f} |")
    L.append("")
    L.append("Requests of the last rerun by route: S3 "
             + ", ".join(f"`{k}` {v}" for k, v in last["s3"]["by_class"].items())
             + "; registry "
             + ", ".join(f"`{k}` {v}" for k, v in last["registry"]["by_class"].items()) + ".")
    L.append("")
    L.append(
        "Why it is cheap: the planner (`crates/engine/src/plan.rs`) compares the listing with "
        "the newest snapshot by repository and digest, and each snapshot record carries the "
        "manifest's lock watermark, so an unchanged image whose lock covers the new snapshot is "
        "carried with no request at all. What remains is the listing (for a generic registry "
        "one HEAD per tag; for ECR, DescribeImages pages instead), the snapshot LIST and GET, "
        "and the new snapshot's PUT. The S3 request bytes are the snapshot document itself."
    )
    L.append(END)
    return "\n".join(L) + "\n"


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--bin-dir", default=str(REPO_ROOT / "target" / "release"))
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--md", default=str(REPO_ROOT / "docs" / "benchmarks.md"))
    p.add_argument("--json", default="", help="also dump every measurement here")
    a, _ = p.parse_known_args()
    bin_dir = Path(a.bin_dir)
    env = dict(os.environ)
    env["ECR_VAULT_REGISTRY_USERNAME"] = env["ECR_VAULT_TEST_REGISTRY_USER"]
    env["ECR_VAULT_REGISTRY_PASSWORD"] = env["ECR_VAULT_TEST_REGISTRY_PASSWORD"]
    stamp = dt.datetime.now().strftime("%H%M%S")
    prefix = f"rerun{stamp}"
    vault = f"s3://{env.get('ECR_VAULT_TEST_BUCKET', 'vault')}/rerun-{stamp}"
    log("pushing 1,000 images")
    seed = run_json([str(bin_dir / "ecr-vault-bench"), "seed-many", "--prefix", prefix], env)
    log(f"pushed: {seed}")
    first = counted_backup(bin_dir, env, vault, prefix)
    log(f"first backup: {first['wall_s']:.2f}s, S3 {first['s3']['requests']}, "
        f"registry {first['registry']['requests']}")
    reruns = []
    for i in range(a.reps):
        r = counted_backup(bin_dir, env, vault, prefix)
        c = r["report"]["counts"]
        log(f"rerun {i + 1}: {r['wall_s']:.2f}s, S3 {r['s3']['requests']}, registry "
            f"{r['registry']['requests']}, bytes written {c['bytesWritten']}, unchanged "
            f"{c['imagesUnchanged']}")
        reruns.append(r)
    machine = f"{os.cpu_count()} CPUs, {os.uname().sysname} {os.uname().release}"
    mdsection.splice(Path(a.md), section(seed, first, reruns, machine), BEGIN, END)
    if a.json:
        Path(a.json).write_text(json.dumps({"seed": seed, "first": first, "reruns": reruns},
                                           indent=1))
    log(f"wrote the rerun section of {a.md}")


if __name__ == "__main__":
    main()
