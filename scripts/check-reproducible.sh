#!/usr/bin/env bash
# Compares two build-image outputs (measurements.json, policy.json, cloister.eif):
#   scripts/check-reproducible.sh build/image build/image-2
# Everything but the build's duration must be identical; prints the difference otherwise.
set -euo pipefail
a="$1"; b="$2"
strip() { node -e 'const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); delete m.image.buildSeconds; console.log(JSON.stringify(m, null, 2));' "$1"; }
if ! diff <(strip "$a/measurements.json") <(strip "$b/measurements.json"); then
  echo "NOT reproducible: measurements.json differ (above)"; exit 1
fi
for f in policy.json cloister.eif; do
  if [ -e "$a/$f" ] || [ -e "$b/$f" ]; then
    cmp "$a/$f" "$b/$f" || { echo "NOT reproducible: $f differs"; exit 1; }
  fi
done
echo "reproducible: same image id, layer digests, model, lock file, EIF and PCRs"
node -e 'const m = JSON.parse(require("fs").readFileSync(process.argv[1], "utf8")); console.log("image id " + m.image.id); for (const l of m.image.layers ?? []) console.log("layer " + l); for (const [k, v] of Object.entries(m.measurements ?? {})) console.log(k + " " + v);' "$a/measurements.json"
