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

if [ "$snapshot" = latest ]; then
  # Snapshot keys sort by time: the last one is the newest.
  snapshot="$(aws s3 ls "$vault/snapshots/" | awk '{print $4}' | grep '\.json$' | sort | tail -n 1)"
  snapshot="${snapshot%.json}"
  [ -n "$snapshot" ] || { echo "no snapshots in $vault" >&2; exit 1; }
fi

mkdir -p "$dir/blobs/sha256"
aws s3 cp --only-show-errors "$vault/oci-layout" "$dir/oci-layout"
aws s3 cp --only-show-errors "$vault/snapshots/$snapshot.json" "$dir/index.json"

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
