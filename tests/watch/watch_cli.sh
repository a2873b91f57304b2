#!/usr/bin/env bash
# Watching runs, end to end on a tiny model: the TensorBoard event files of train and sft read back
# by an independent reader (read_tfevents.py: its own CRC-32C and protobuf decoding) equal
# metrics.jsonl point for point; a run resumed from an earlier checkpoint marks the resume with a
# SessionLog START, after which TensorBoard's view equals metrics.jsonl again (the interrupted
# run's later points purged); run.tensorboard: false writes none; `dpo plot` of two runs writes a
# PNG and a well-formed SVG with both runs' curves, and names the file (and line) it cannot read.
set -uo pipefail
dpo=$1
here=$(cd "$(dirname "$0")" && pwd)
reader="$here/read_tfevents.py"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$here/../e2e_helpers.sh"

make_tiny_inputs "$dpo" "$work" 64
config() {  # config OUTPUT_DIR: DPO, with an eval every 3 steps
  cat >"$work/run.yaml" <<YAML
run: {output_dir: $1, log_every: 1}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 8, micro_batch_size: 8, max_steps: 8, optimizer: adamw, lr: 1.0e-3, warmup_steps: 2,
        save_every: 4, eval_every: 3, keep_checkpoints: 0}
YAML
}
cd "$work" || exit 1

# A fresh run: one event file, every metrics.jsonl point in it, the config text, no START marker.
config "$work/a"
start=$EPOCHREALTIME
"$dpo" train --config run.yaml >a.txt 2>&1 || bad "train: $(tail -3 a.txt)"
echo "train (8 steps, 3 evals): $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }") s"
files=$(ls a/tensorboard | grep -c '^events\.out\.tfevents\.[0-9]*\.[^.].*\.[0-9]*\.[0-9]*$')
[ "$files" -eq 1 ] && pass "train writes one event file a/tensorboard/$(ls a/tensorboard)" || bad "event files: $(ls a/tensorboard)"
python3 "$reader" check a >check-a.txt 2>&1 && pass "train: $(tail -1 check-a.txt)" || bad "train: $(cat check-a.txt)"
python3 "$reader" dump a/tensorboard/events.out.tfevents.* >dump-a.txt 2>&1
grep -q '"train/rewards/accuracies"' dump-a.txt && grep -q '"eval/loss"' dump-a.txt \
  && pass "tags are grouped as train/<name> and eval/<name>" || bad "tags: $(head -3 dump-a.txt)"
echo "event file: $(stat -c %s a/tensorboard/events.out.tfevents.*) bytes for $(grep -c . a/metrics.jsonl) metrics.jsonl lines of $(stat -c %s a/metrics.jsonl) bytes"

# A crash after step 8's points but before its checkpoint (step-8 removed): the rerun resumes from
# step 4, writes a new event file with START at step 5, and TensorBoard's view (earlier file's
# steps 5-8 purged) equals metrics.jsonl (which MetricsLog cut to step 4, then appended).
cp -r a b
rm -rf b/checkpoints/step-8 b/final
config "$work/b"
"$dpo" train --config run.yaml >b.txt 2>&1 || bad "resume: $(tail -3 b.txt)"
grep -q "resuming from .*step-4 (step 4)" b.txt || bad "resume did not start at step 4: $(head -3 b.txt)"
[ "$(ls b/tensorboard | wc -l)" -eq 2 ] && [ "$(ls b/tensorboard | tail -1)" != "$(ls a/tensorboard)" ] \
  && pass "the resumed run opens a second event file, named to sort after the first" || bad "files: $(ls b/tensorboard)"
python3 "$reader" check b --resumed-from 4 >check-b.txt 2>&1 \
  && pass "resumed from step 4 with orphans at steps 5-8: $(tail -1 check-b.txt)" || bad "resume: $(cat check-b.txt)"
# The reader without the purge would see the first file's points too: the marker is what removes them.
python3 - "$reader" b <<'PY' && pass "the START marker is what makes the curves equal (first file's steps 5-8 present before it)" || bad "no orphans to purge"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("r", sys.argv[1]); r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)
first = r.event_files(sys.argv[2])[0]
steps = {e["step"] for e in map(r.decode_event, r.records(open(first, "rb").read(), first)) if e.get("values")}
assert {5, 6, 7, 8} <= steps, steps
PY

# SIGTERM: the run saves the step it stopped at and exits 75; the rerun resumes from that step.
config "$work/c"
sed -i 's/max_steps: 8/max_steps: 400/; s/save_every: 4/save_every: 1000/' run.yaml
"$dpo" train --config run.yaml >c1.txt 2>&1 &
pid=$!
for _ in $(seq 600); do [ "$(grep -c '"loss"' c/metrics.jsonl 2>/dev/null || echo 0)" -ge 3 ] && break; sleep 0.05; done
kill -TERM "$pid"
wait "$pid"
rc=$?
stopped=$(ls c/checkpoints | sed -n 's/^step-//p' | sort -n | tail -1)
sed -i 's/max_steps: 400/max_steps: '"$((stopped + 2))"'/' run.yaml
"$dpo" train --config run.yaml --allow-changed train.max_steps >c2.txt 2>&1 || bad "SIGTERM resume: $(tail -3 c2.txt)"
[ "$rc" -eq 75 ] && python3 "$reader" check c --resumed-from "$stopped" >check-c.txt 2>&1 \
  && pass "SIGTERM at step $stopped (exit 75), resumed: $(tail -1 check-c.txt)" || bad "SIGTERM: rc=$rc $(cat check-c.txt)"

# A half-written last record (a kill inside a write) leaves the records before it readable.
f=$(ls a/tensorboard/events.out.tfevents.* | head -1)
head -c $(($(stat -c %s "$f") - 7)) "$f" >truncated.tfevents
python3 - "$reader" truncated.tfevents <<'PY' && pass "a truncated last record: the records before it still read" || bad "truncated file"
import importlib.util, sys
spec = importlib.util.spec_from_file_location("r", sys.argv[1]); r = importlib.util.module_from_spec(spec); spec.loader.exec_module(r)
data, n = open(sys.argv[2], "rb").read(), 0
try:
    for _ in r.records(data, sys.argv[2]): n += 1
    sys.exit("no truncation seen")
except r.Truncated:
    assert n > 3, n
PY

# SFT: the same (its metrics: loss, logps/chosen, ...).
cat >sft.yaml <<YAML
run: {output_dir: $work/sft}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 8, micro_batch_size: 8, max_steps: 5, optimizer: adamw, lr: 1.0e-3, warmup_steps: 0}
YAML
"$dpo" sft --config sft.yaml >sft.txt 2>&1 || bad "sft: $(tail -3 sft.txt)"
python3 "$reader" check sft >check-sft.txt 2>&1 && pass "sft: $(tail -1 check-sft.txt)" || bad "sft: $(cat check-sft.txt)"

# run.tensorboard: false: no event file.
"$dpo" sft --config sft.yaml --set run.output_dir="$work/quiet" --set run.tensorboard=false >quiet.txt 2>&1 \
  || bad "tensorboard false: $(tail -3 quiet.txt)"
[ -f quiet/metrics.jsonl ] && [ ! -e quiet/tensorboard ] && pass "run.tensorboard: false writes no event file" \
  || bad "tensorboard false: $(ls quiet)"

# dpo plot: two runs overlaid; the PNG's size, the SVG well-formed with each run's colour.
start=$EPOCHREALTIME
"$dpo" plot a sft --out "$work/both" >plot.txt 2>&1 || bad "plot: $(cat plot.txt)"
echo "plot of 2 runs: $(awk "BEGIN { printf \"%.1f\", $EPOCHREALTIME - $start }") s: $(cat plot.txt)"
python3 - both.png both.svg <<'PY' && pass "plot: $(cat plot.txt)" || bad "plot files"
import re, struct, sys, xml.etree.ElementTree as ET
png = open(sys.argv[1], "rb").read()
assert png[:8] == b"\x89PNG\r\n\x1a\n" and png[12:16] == b"IHDR", "not a PNG"
w, h = struct.unpack(">II", png[16:24])
assert 1000 <= w <= 2000 and 600 <= h <= 2000, (w, h)
root = ET.parse(sys.argv[2]).getroot()  # well-formed, or this raises
assert root.tag.endswith("svg") and float(root.get("width").rstrip("pt")) == w, root.attrib
paths = [p.get("style", "") + p.get("stroke", "") for p in root.iter() if p.tag.endswith("path")]
for colour in ("12.156863%,46.666667%,70.588235%", "100%,49.803922%,5.490196%"):  # the first two runs'
    assert sum(colour in p for p in paths) >= 4, f"few curves of rgb({colour}) in the SVG"
PY
"$dpo" plot a >/dev/null 2>&1 && [ -f a/plot.png ] && [ -f a/plot.svg ] && [ -z "$(ls a | grep tmp-)" ] \
  && pass "plot without --out writes RUN_DIR/plot.png and plot.svg" || bad "default output: $(ls a)"
mkdir empty
"$dpo" plot empty >err.txt 2>&1
grep -q "dpo: error: empty/metrics.jsonl: cannot open" err.txt && pass "a missing metrics.jsonl is named" || bad "$(cat err.txt)"
: >empty/metrics.jsonl
"$dpo" plot empty >err.txt 2>&1
grep -q "dpo: error: empty/metrics.jsonl: no metrics yet" err.txt && pass "an empty metrics.jsonl is named" || bad "$(cat err.txt)"
printf '{"step": 1, "loss": 0.5}\n{"step": 2, "loss": \n' >empty/metrics.jsonl
"$dpo" plot empty >err.txt 2>&1
grep -q "dpo: error: empty/metrics.jsonl:2: " err.txt && pass "a bad line is named file:line" || bad "$(cat err.txt)"

[ "$failures" -eq 0 ] && echo "all passed" || { echo "$failures failure(s)"; exit 1; }
