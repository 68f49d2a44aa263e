#!/usr/bin/env bash
# Keep the cells behind the published rib-mini numbers with the repository. docs/results/cells.sqlite.gz is
# a results store holding every cell row and pretrained evaluation (no weights: derived cells retrain the
# ingredients they need), so that each leaderboard entry's cell keys resolve to their full records, and a
# later session resumes where this one stopped instead of losing a store kept outside the repository.
#   bash docs/results/archive.sh STORE     merge STORE's rows into the archive (ribench store merge: a key
#                                          stored with other results is a conflict, and nothing is written)
#   gunzip -c docs/results/cells.sqlite.gz > STORE    start a store from the archive, then rerun.sh STORE
set -euo pipefail
store=${1:?usage: archive.sh STORE}
here="$(cd "$(dirname "$0")" && pwd)"
archive="$here/cells.sqlite.gz"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sources=("$store")
if [ -f "$archive" ]; then
  gunzip -c "$archive" > "$work/archived.sqlite"
  sources=("$work/archived.sqlite" "$store")
fi
ribench store merge "${sources[@]}" -o "$work/merged.sqlite"
python3 - "$work/merged.sqlite" <<'PY'
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("DELETE FROM leases")
conn.commit()
conn.execute("VACUUM")
conn.close()
PY
gzip -9 -n -c "$work/merged.sqlite" > "$work/cells.sqlite.gz"
mv "$work/cells.sqlite.gz" "$archive"
echo "wrote $archive ($(du -h "$archive" | cut -f1))"
