#!/usr/bin/env bash
# Break-glass restore WITHOUT ecr-vault: download one snapshot of the vault as a plain OCI image
# layout with the AWS CLI. Then restore any image from it with stock skopeo:
#
#   scripts/break-glass.sh s3://bucket/prefix latest ./layout
#   skopeo copy --all --preserve-digests oci:./layout:team/app:v1 docker://registry/team/app:v1
#
# Usage: break-glass.sh s3://bucket[/prefix] <snapshot-id|latest> <dir>
# Needs only the AWS CLI (credentials/endpoint from the usual AWS configuration) and python3
# to read the snapshot's JSON. Only the blobs the snapshot references are downloaded.
set -euo pipefail
vault="${1:?usage: break-glass.sh s3://bucket[/prefix] <snapshot-id|latest> <dir>}"
snapshot="${2:?snapshot id or latest}"
dir="${3:?output directory}"
vault="${vault%/}"

mkdir -p "$dir/blobs/sha256"
aws s3 cp --only-show-errors "$vault/oci-layout" "$dir/oci-layout"

if [ "$snapshot" = latest ]; then
  # "latest" is the registry as last seen, the same rule as `ecr-vault restore --snapshot
  # latest`: the newest complete full listing (a scheduled run, or one without filters) is
  # the base, and every newer snapshot of the same source overlays it name by name
  # (repository:tag, or the digest for untagged records). In a vault of filtered runs only,
  # the newest complete full listing is the base; without even that, the oldest snapshot.
  # The result is written as one index.json.
  aws s3 ls "$vault/snapshots/" | awk '{print $4}' | grep '\.json$' | sort -r > "$dir/.ids" || true
  [ -s "$dir/.ids" ] || { echo "no snapshots in $vault" >&2; exit 1; }
  snapshot="$(python3 - "$vault" "$dir" <<'PY'
import json, subprocess, sys
vault, d = sys.argv[1], sys.argv[2]
RUN = "dev.ecr-vault.run"

def full(run):
    scope = run.get("scope") or ("partial" if run.get("trigger") in ("push", "work-item") else "full")
    return bool(run.get("complete")) and scope == "full"

def is_base(run):
    f = run.get("filters")
    unfiltered = f is None or (isinstance(f, dict) and all(v in (None, []) for v in f.values()))
    return full(run) and (run.get("trigger") == "scheduled" or unfiltered)

read = []  # newest first, up to and including the base
for name in (l.strip() for l in open(d + "/.ids")):
    if not name:
        continue
    out = subprocess.run(["aws", "s3", "cp", "--only-show-errors", f"{vault}/snapshots/{name}", "-"],
                         check=True, capture_output=True).stdout
    doc = json.loads(out)
    run = json.loads(doc.get("annotations", {}).get(RUN, "{}"))
    read.append((name[:-len(".json")], doc, run))
    if is_base(run):
        break
read.reverse()  # oldest first
bases = [i for i, (_, _, run) in enumerate(read) if is_base(run)] or \
        [i for i, (_, _, run) in enumerate(read) if full(run)] or [0]
read = read[bases[-1]:]
base_id, base_doc, base_run = read[0]
merged, used = {}, []
for sid, doc, run in read:
    if run.get("source") != base_run.get("source"):
        continue
    used.append(sid)
    for m in doc.get("manifests", []):
        a = m.get("annotations", {})
        tag = a.get("dev.ecr-vault.tag")
        merged[(a.get("dev.ecr-vault.repository", ""), "tag:" + tag if tag else "digest:" + m["digest"])] = m
base_doc["manifests"] = [merged[k] for k in sorted(merged)]
base_doc.setdefault("annotations", {})["dev.ecr-vault.latest"] = " ".join(used)
json.dump(base_doc, open(d + "/index.json", "w"))
print(" + ".join(used))
PY
)"
  rm -f "$dir/.ids"
else
  aws s3 cp --only-show-errors "$vault/snapshots/$snapshot.json" "$dir/index.json"
fi

# Walk the closure: the snapshot index → manifests/indexes → configs and layers.
fetch() { aws s3 cp --only-show-errors "$vault/blobs/sha256/$1" "$dir/blobs/sha256/$1"; }
python3 - "$dir" <<'PY' > "$dir/.todo"
import json, sys
d = json.load(open(sys.argv[1] + "/index.json"))
for m in d.get("manifests", []):
    print(m["digest"].split(":", 1)[1])
PY
while [ -s "$dir/.todo" ]; do
  next="$dir/.todo.next"; : > "$next"
  while read -r hex; do
    [ -f "$dir/blobs/sha256/$hex" ] && continue
    fetch "$hex"
    python3 - "$dir/blobs/sha256/$hex" <<'PY' >> "$next"
import json, sys
try:
    d = json.load(open(sys.argv[1]))
except Exception:
    sys.exit(0)  # a layer, not JSON
if not isinstance(d, dict):
    sys.exit(0)
refs = ([d["config"]] if isinstance(d.get("config"), dict) else []) + d.get("layers", []) + d.get("manifests", [])
for r in refs:
    if isinstance(r, dict) and str(r.get("digest", "")).startswith("sha256:"):
        print(r["digest"].split(":", 1)[1])
PY
  done < "$dir/.todo"
  mv "$next" "$dir/.todo"
done
rm -f "$dir/.todo"
# Check every downloaded blob against its name, as any consumer of a layout should.
(cd "$dir/blobs/sha256" && for f in *; do echo "$f  $f"; done | sha256sum --quiet -c -) \
  || { echo "a downloaded blob does not match its digest" >&2; exit 1; }
echo "snapshot $snapshot is an OCI layout in $dir; restore with: skopeo copy --all --preserve-digests oci:$dir:<repository>:<tag> docker://<registry>/<repository>:<tag>"
