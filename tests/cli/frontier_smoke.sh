#!/usr/bin/env bash
# scripts/frontier.sh in its quick form: the CSV has a row per arm with finite KL and reward, the
# SFT row has KL 0 exactly (a model against itself), the SVG has a marker per row; and
# score-synthetic refuses a KL estimate from samples of another temperature.
set -uo pipefail
dpo=$1
source_dir=$2
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"
if (cd "$source_dir" && DPO="$dpo" FRONTIER_QUICK=1 FRONTIER_WORK="$work/run" FRONTIER_OUT="$work/out" \
      bash scripts/frontier.sh >"$work/log.txt" 2>&1); then
  pass "frontier.sh quick ran"
else
  bad "frontier.sh: $(tail -5 "$work/log.txt")"
fi
if out=$(python3 - "$work/out/frontier.csv" "$work/out/frontier.svg" <<'PY' 2>&1
import csv, math, sys
rows = list(csv.DictReader(open(sys.argv[1])))
assert [r["method"] for r in rows] == ["dpo", "preferred-ft", "sft"], rows
assert all(math.isfinite(float(r[k])) for r in rows for k in ("kl", "kl_se", "reward", "reward_se")), rows
assert float(rows[-1]["kl"]) == 0.0, rows[-1]
svg = open(sys.argv[2]).read()
assert svg.count("<circle") == len(rows) + 4, svg.count("<circle")  # a marker per row, 4 in the legend
PY
); then pass "frontier.csv has finite numbers, the SFT row KL 0, the SVG a marker per row"
else bad "frontier outputs: $out"; fi
sft=$work/run/sft/final
if "$dpo" score-synthetic --model "$sft" --reference "$sft" --data "$work/run/data/eval.jsonl" --temperature 0.5 \
     >"$work/t.txt" 2>&1; then bad "a KL estimate at temperature 0.5 was accepted"
else grep -q "temperature must be 1" "$work/t.txt" && pass "--reference refuses another temperature" || bad "$(cat "$work/t.txt")"; fi
"$dpo" score-synthetic --model "$work/run/init" --reference "$sft" --data "$work/run/data/eval.jsonl" --json \
  | tail -1 | python3 -c "import json, sys; r = json.loads(sys.stdin.read()); assert r['kl'] > 0, r" \
  && pass "a random model's KL to the SFT model is positive" || bad "KL of the random model"
[ "$failures" -eq 0 ] && echo "all passed" || { echo "$failures failure(s)"; exit 1; }
