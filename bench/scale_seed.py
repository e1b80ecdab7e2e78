"""Seed a docker-registry (distribution v2) filesystem root directly, without pushing.

Writes the storage layout the registry's filesystem driver reads, under
``ROOT/docker/registry/v2``:

    blobs/sha256/<hex[:2]>/<hex>/data                                    every blob and manifest
    repositories/<repo>/_layers/sha256/<hex>/link                        each blob the repo holds
    repositories/<repo>/_manifests/revisions/sha256/<hex>/link           each manifest
    repositories/<repo>/_manifests/tags/<tag>/current/link               the tag's manifest
    repositories/<repo>/_manifests/tags/<tag>/index/sha256/<hex>/link    the tag's history

A link file holds ``sha256:<hex>`` and no newline, as distribution writes it. Pushing 100,000
images over HTTP takes hours on two cores; writing the files takes minutes.

The shape (deterministic: the same arguments give the same bytes and digests):
- REPOS repositories ``<prefix>/svcNNNN``, PER_REPO images each, tagged ``vNNN``;
- every image: an OCI image manifest, its own config (~300 bytes, unique) and 2 or 3 layers:
  a base layer shared by every repository (16 of 4 KiB), a repository layer shared by a fifth
  of the repository's images (5 per repository, 2 KiB), and for every fifth image a layer of its
  own (1 KiB). Layer bytes are random (from a seeded generator), media type tar+gzip.

Usage: python bench/scale_seed.py ROOT [--repos 2000 --per-repo 50 --prefix scale]
Prints one JSON line: images, repositories, distinct blobs, blob bytes, files, seconds.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import random
import sys
import time
from pathlib import Path

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"

BASE_LAYERS = 16
REPO_LAYERS = 5
OWN_LAYER_EVERY = 5


def blob_bytes(seed: str, size: int) -> bytes:
    return random.Random(seed).randbytes(size)


class Seeder:
    def __init__(self, root: Path) -> None:
        self.v2 = root / "docker" / "registry" / "v2"
        self.blobs: dict[str, int] = {}
        self.files = 0

    def _write(self, path: Path, data: bytes) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with open(path, "wb") as f:
            f.write(data)
        self.files += 1

    def blob(self, data: bytes) -> str:
        """Stores a blob once; returns its hex digest."""
        hx = hashlib.sha256(data).hexdigest()
        if hx not in self.blobs:
            self._write(self.v2 / "blobs" / "sha256" / hx[:2] / hx / "data", data)
            self.blobs[hx] = len(data)
        return hx

    def link(self, path: Path, hx: str) -> None:
        self._write(path / "link", f"sha256:{hx}".encode())


def seed(root: Path, prefix: str, repos: int, per_repo: int) -> dict:
    s = Seeder(root)
    base = [s.blob(blob_bytes(f"base-{b}", 4096)) for b in range(BASE_LAYERS)]
    for r in range(repos):
        name = f"{prefix}/svc{r:04d}"
        repo_dir = s.v2 / "repositories" / name
        repo_layers = [s.blob(blob_bytes(f"repo-{r}-{k}", 2048)) for k in range(REPO_LAYERS)]
        linked: set[str] = set()
        for i in range(per_repo):
            layers = [base[r % BASE_LAYERS], repo_layers[i % REPO_LAYERS]]
            if i % OWN_LAYER_EVERY == 0:
                layers.append(s.blob(blob_bytes(f"own-{r}-{i}", 1024)))
            config = json.dumps({
                "architecture": "amd64",
                "os": "linux",
                "created": "2026-01-01T00:00:00Z",
                "config": {"Labels": {"repository": name, "image": str(i)}},
                "rootfs": {"type": "layers", "diff_ids": [f"sha256:{h}" for h in layers]},
            }, separators=(",", ":")).encode()
            cfg = s.blob(config)
            manifest = json.dumps({
                "schemaVersion": 2,
                "mediaType": OCI_MANIFEST,
                "config": {"mediaType": OCI_CONFIG, "digest": f"sha256:{cfg}",
                           "size": len(config)},
                "layers": [{"mediaType": OCI_LAYER, "digest": f"sha256:{h}",
                            "size": s.blobs[h]} for h in layers],
            }, separators=(",", ":")).encode()
            man = s.blob(manifest)
            for hx in [cfg, *layers]:
                if hx not in linked:
                    s.link(repo_dir / "_layers" / "sha256" / hx, hx)
                    linked.add(hx)
            mdir = repo_dir / "_manifests"
            s.link(mdir / "revisions" / "sha256" / man, man)
            tag = mdir / "tags" / f"v{i:03d}"
            s.link(tag / "current", man)
            s.link(tag / "index" / "sha256" / man, man)
    return {
        "images": repos * per_repo,
        "repositories": repos,
        "distinct_blobs": len(s.blobs) - repos * per_repo,
        "manifests": repos * per_repo,
        "blob_bytes": sum(s.blobs.values()),
        "files": s.files,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("root")
    p.add_argument("--prefix", default="scale")
    p.add_argument("--repos", type=int, default=2000)
    p.add_argument("--per-repo", type=int, default=50)
    a = p.parse_args()
    if a.per_repo > 1000 or a.repos > 10000:
        sys.exit("scale_seed: at most 10,000 repositories of 1,000 images")
    root = Path(a.root)
    if (root / "docker").exists():
        sys.exit(f"scale_seed: {root} already holds a registry; use an empty directory")
    t = time.monotonic()
    out = seed(root, a.prefix, a.repos, a.per_repo)
    out["seconds"] = round(time.monotonic() - t, 1)
    os.sync()
    print(json.dumps(out))


if __name__ == "__main__":
    main()
