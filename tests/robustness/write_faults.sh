#!/usr/bin/env bash
# Write faults: full and read-only output file systems (small tmpfs mounts), HDF5 files locked by
# another process, and SIGKILL at random moments of train and precompute-ref. Every failure must
# be one line "dpo: error: <file>: ... <reason>" with exit code 1 within the time limit (no
# signal, no abort, no hang), leave no .tmp- name behind, and leave what was complete before
# intact: a rerun with space resumes and ends with the result of an uninterrupted run
# (bit-identical model for train; log-probs equal to float rounding for precompute-ref).
# Needs root (mount); exits 77 (skipped) where tmpfs cannot be mounted.
set -uo pipefail
dpo=$1
mpiexec=${2:-}
if [ "$(id -u)" -ne 0 ]; then echo "skip: mounting tmpfs needs root"; exit 77; fi
work=$(mktemp -d)
mnt=$work/mnt
mkdir -p "$mnt"
if ! mount -t tmpfs -o size=64k tmpfs "$mnt" 2>/dev/null; then echo "skip: cannot mount tmpfs"; rm -rf "$work"; exit 77; fi
umount "$mnt"
lock_holder=""
cleanup() {
  [ -n "$lock_holder" ] && kill "$lock_holder" 2>/dev/null
  while mountpoint -q "$mnt"; do umount -l "$mnt" || break; done
  rm -rf "$work"
}
trap cleanup EXIT
source "$(dirname "$0")/../e2e_helpers.sh"
passed=0
pass() { echo "ok: $1"; passed=$((passed + 1)); }
limit=120  # seconds; a command still running then counts as a hang

# fresh_mount FREE_KB [ro]: an empty 2 MiB tmpfs at $mnt with only FREE_KB left free.
fresh_mount() {
  while mountpoint -q "$mnt"; do umount "$mnt"; done
  mount -t tmpfs -o size=2m tmpfs "$mnt"
  [ "$1" -lt 2048 ] && head -c $(((2048 - $1) * 1024)) /dev/zero >"$mnt/.filler"
  [ "${2:-}" = ro ] && mount -o remount,ro "$mnt"
  return 0
}
grow_mount() { mount -o remount,rw,size=8m "$mnt"; }

# The file named by a write error (its final name: .tmp-<pid> stripped).
failed_file() {
  sed -E 's/^.* ([^ ]+): cannot (create|write|sync to disk|close|open for appending|create directory|rename)[^:]*: .*$/\1/' "$1" |
    sed -E 's/\.tmp-[0-9]+$//; s/.*\///'
}
hits=""

# expect_write_error NAME REASON CMD...: CMD fails with exit code 1 and one line naming a file under
# $mnt with REASON, and leaves no .tmp- name behind.
expect_write_error() {
  local name=$1 reason=$2; shift 2
  timeout -k 5 "$limit" "$@" >"$work/out.txt" 2>"$work/err.txt"
  local rc=$?
  local errors
  errors=$(grep -c '^dpo: error: ' "$work/err.txt")
  if [ "$rc" -ne 1 ]; then
    bad "$name: exit code $rc (124: hang, >128: killed by a signal); stderr: $(head -c 600 "$work/err.txt")"
  elif [ "$errors" -ne 1 ] || ! grep -E "^dpo: error: .*$mnt.*$reason" "$work/err.txt" >/dev/null; then
    bad "$name: want one 'dpo: error: $mnt/...: ... $reason' line; stderr: $(head -c 600 "$work/err.txt")"
  elif [ -n "$(find "$mnt" -name '*.tmp-*' 2>/dev/null)" ]; then
    bad "$name: left $(find "$mnt" -name '*.tmp-*' | head -3 | tr '\n' ' ')"
  else
    local file
    file=$(grep '^dpo: error: ' "$work/err.txt" | failed_file /dev/stdin)
    hits="$hits $file"
    pass "$name: failed in $file"
  fi
}

# Every step-N checkpoint directory is complete (a DONE marker and every file).
checkpoints_complete() {
  local dir
  for dir in "$1"/checkpoints/step-*; do
    [ -d "$dir" ] || continue
    case "$dir" in *.tmp-*) continue ;; esac
    for f in DONE config.json model.safetensors optimizer.libtorch trainer_state.json; do
      [ -f "$dir/$f" ] || { echo "$dir lacks $f"; return 1; }
    done
  done
  return 0
}

# values FILE DATASET: one number per line.
values() {
  local out
  out=$(mktemp "$work/values.XXXXXX")
  h5dump -y -w 0 -m '%.17g' -d "$2" -o "$out" "$1" >/dev/null && tr -d ' ,' <"$out" | grep -v '^$'
  rm -f "$out"
}
# same_logps A B: the log-prob datasets agree to float rounding, the lengths exactly.
same_logps() {
  local ds
  for ds in /chosen_logps /rejected_logps /eval/chosen_logps /eval/rejected_logps; do
    paste <(values "$1" "$ds") <(values "$2" "$ds") | awk -v ds="$ds" '
      NF != 2 { print ds ": lengths differ"; bad = 1; exit }
      { d = $1 - $2; if (d < 0) d = -d; s = $1 < 0 ? -$1 : $1; if (d > 1e-4 * (1 + s)) { print ds "[" NR - 1 "]: " $1 " vs " $2; bad = 1; exit } }
      END { exit bad }' || return 1
  done
  for ds in /chosen_lengths /rejected_lengths /eval/chosen_lengths /eval/rejected_lengths; do
    cmp -s <(values "$1" "$ds") <(values "$2" "$ds") || { echo "$ds differs"; return 1; }
  done
}

milliseconds() { local t=${EPOCHREALTIME/./}; echo $((t / 1000)); }
make_tiny_inputs "$dpo" "$work" 64
"$dpo" make-demo-data --out "$work/big" --train-pairs 768 --eval-pairs 64 --vocab-size 64 >/dev/null

# The uninterrupted results everything below is compared with.
# (TensorBoard event files off, so that the fill levels below land in the files they name; the
# event file has its own case after them.)
train_yaml() {  # train_yaml OUTPUT_DIR [TENSORBOARD]
  cat >"$work/train.yaml" <<YAML
run: {output_dir: $1, tensorboard: ${2:-false}}
model: {policy: $work/model}
data: {train: $work/data/train.jsonl, max_length: 64, max_prompt_length: 32}
train: {micro_batch_size: 4, global_batch_size: 8, epochs: 2, save_every: 1, warmup_steps: 0, lr: 1e-3}
YAML
}
train_yaml "$work/reference-run"
"$dpo" train --config "$work/train.yaml" >/dev/null || bad "uninterrupted train"
reference_model=$work/reference-run/final/model.safetensors
precompute_yaml() {  # precompute_yaml LOGPS_PATH TRAIN EVAL
  cat >"$work/precompute.yaml" <<YAML
run: {output_dir: $work/precompute-run}
model: {policy: $work/model}
data: {train: $2, eval: $3, max_length: 64, max_prompt_length: 32}
reference: {logps_path: $1, batch_size: 8}
YAML
}
precompute_yaml "$work/reference.h5" "$work/data/train.jsonl" "$work/data/eval.jsonl"
"$dpo" precompute-ref --config "$work/precompute.yaml" >/dev/null || bad "uninterrupted precompute-ref"

# After a failed train: more space, the same command again, which must end bit-identical to the
# uninterrupted run.
rerun_train_with_space() {  # rerun_train_with_space LABEL
  grow_mount
  if timeout -k 5 "$limit" "$dpo" train --config "$work/train.yaml" >"$work/out.txt" 2>&1 &&
    cmp -s "$reference_model" "$mnt/run/final/model.safetensors"; then
    pass "$1: the rerun with space ends bit-identical to an uninterrupted run"
  else
    bad "$1: rerun: $(tail -c 400 "$work/out.txt")"
  fi
}

# --- A full disk at several fill levels, so that the failure lands in different files ----------
nospace="No space left on device"
for free in 0 4 8 12 48 140 300 420; do  # 0: dpo.lock; 4: config.train.yaml; ...
  fresh_mount "$free"
  train_yaml "$mnt/run"
  expect_write_error "train, $free KiB free" "$nospace" "$dpo" train --config "$work/train.yaml"
  why=$(checkpoints_complete "$mnt/run") && pass "train, $free KiB free: every checkpoint left is complete" \
    || bad "train, $free KiB free: $why"
  rerun_train_with_space "train, $free KiB free"
done
for file in config.train.yaml metrics.jsonl config.json model.safetensors optimizer.libtorch; do
  case " $hits " in *" $file "*) pass "a full disk was met while writing $file" ;;
                    *) bad "no fill level made train fail in $file (hits:$hits)" ;; esac
done
# The TensorBoard event file, opened after config.train.yaml and before the first metrics.jsonl line.
hits=""
fresh_mount 8
train_yaml "$mnt/run" true
expect_write_error "train with TensorBoard events, 8 KiB free" "$nospace" "$dpo" train --config "$work/train.yaml"
case "$hits" in *events.out.tfevents.*) pass "a full disk was met while writing the event file" ;;
                *) bad "8 KiB free did not fail in the event file (hits:$hits)" ;; esac
rerun_train_with_space "train with TensorBoard events"

hits=""
for free in 0 4 8 12 16; do
  fresh_mount "$free"
  precompute_yaml "$mnt/ref.h5" "$work/data/train.jsonl" "$work/data/eval.jsonl"
  expect_write_error "precompute-ref, $free KiB free" "$nospace" "$dpo" precompute-ref --config "$work/precompute.yaml"
  if [ -e "$mnt/ref.h5.partial" ]; then
    "$dpo" inspect "$mnt/ref.h5.partial" >/dev/null 2>&1 && pass "precompute-ref, $free KiB free: the .partial file left is readable" \
      || bad "precompute-ref, $free KiB free: unreadable .partial"
  fi
  grow_mount
  if timeout -k 5 "$limit" "$dpo" precompute-ref --config "$work/precompute.yaml" >"$work/out.txt" 2>&1 &&
    why=$(same_logps "$work/reference.h5" "$mnt/ref.h5"); then
    pass "precompute-ref, $free KiB free: the rerun with space equals an uninterrupted run"
  else
    bad "precompute-ref, $free KiB free: rerun: $(tail -c 300 "$work/out.txt") $why"
  fi
done
# (The final ref.h5 is smaller than the .partial it replaces, so a disk that took the last .partial
# takes ref.h5 too: the HDF5 file a full disk meets is the .partial.)
case " $hits " in *" ref.h5.partial "*) pass "a full disk was met while writing ref.h5.partial" ;;
                  *) bad "no fill level made precompute-ref fail in ref.h5.partial (hits:$hits)" ;; esac

for free in 0 4; do
  fresh_mount "$free"
  expect_write_error "convert-data to HDF5, $free KiB free" "$nospace" "$dpo" convert-data "$work/data/train.jsonl" "$mnt/train.h5"
done
"$dpo" convert-data "$work/data/train.jsonl" "$work/train.h5" >/dev/null
fresh_mount 4
expect_write_error "convert-data to JSONL, 4 KiB free" "$nospace" "$dpo" convert-data "$work/train.h5" "$mnt/back.jsonl"
for free in 0 4 40; do
  fresh_mount "$free"
  expect_write_error "init-model, $free KiB free" "$nospace" "$dpo" init-model --arch llama --out "$mnt/model" \
    --set vocab_size=64 --set hidden_size=32 --set intermediate_size=64 --set num_attention_heads=4 --set num_key_value_heads=2
done
cat >"$work/eval.yaml" <<YAML
run: {output_dir: $mnt/eval-run}
model: {policy: $work/model}
data: {eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {micro_batch_size: 4, global_batch_size: 4}
YAML
for free in 0 4; do
  fresh_mount "$free"
  expect_write_error "eval, $free KiB free" "$nospace" "$dpo" eval --config "$work/eval.yaml"
done

if [ -n "$mpiexec" ] && command -v "$mpiexec" >/dev/null; then
  fresh_mount 300
  train_yaml "$mnt/run"
  expect_write_error "mpirun -np 2 train, 300 KiB free (rank 0 writes, rank 1 must not hang)" "$nospace" \
    "$mpiexec" -np 2 "$dpo" train --config "$work/train.yaml"
fi

# --- A read-only file system ---------------------------------------------------------------------
readonly_reason="Read-only file system"
fresh_mount 2048 ro
train_yaml "$mnt/run"
expect_write_error "train into a read-only file system" "$readonly_reason" "$dpo" train --config "$work/train.yaml"
precompute_yaml "$mnt/ref.h5" "$work/data/train.jsonl" "$work/data/eval.jsonl"
expect_write_error "precompute-ref into a read-only file system" "$readonly_reason" "$dpo" precompute-ref --config "$work/precompute.yaml"
expect_write_error "convert-data into a read-only file system" "$readonly_reason" "$dpo" convert-data "$work/data/train.jsonl" "$mnt/t.h5"
expect_write_error "init-model into a read-only file system" "$readonly_reason" "$dpo" init-model --arch gpt2 --out "$mnt/m" \
  --set vocab_size=64 --set n_embd=32 --set n_head=4
expect_write_error "eval into a read-only file system" "$readonly_reason" "$dpo" eval --config "$work/eval.yaml"
# A run directory that turned read-only between two runs: the resumed run fails at its first write.
fresh_mount 2048
train_yaml "$mnt/run"
"$dpo" train --config "$work/train.yaml" --set train.epochs=1 >/dev/null || bad "train before the remount"
mount -o remount,ro "$mnt"
expect_write_error "resuming train in a directory that became read-only" "$readonly_reason" "$dpo" train --config "$work/train.yaml"
while mountpoint -q "$mnt"; do umount "$mnt"; done

# --- HDF5 files locked by another process ---------------------------------------------------------
if command -v flock >/dev/null; then
  cp "$work/reference.h5" "$work/locked.h5"
  # The shell takes the lock on fd 9 and becomes the sleep, so that killing $! ends the holder
  # (`flock FILE sleep 300` would leave its sleep child holding the test's output open for 300 s).
  (exec 9<"$work/locked.h5" && flock -x 9 && exec sleep 300) &
  lock_holder=$!
  for _ in $(seq 50); do grep -q FLOCK /proc/locks && break; sleep 0.1; done
  "$dpo" inspect "$work/locked.h5" >/dev/null 2>"$work/err.txt" && pass "a locked HDF5 file is read without locking by default" \
    || bad "a locked HDF5 file: $(cat "$work/err.txt")"
  if HDF5_USE_FILE_LOCKING=TRUE "$dpo" inspect "$work/locked.h5" >/dev/null 2>"$work/err.txt"; then
    bad "HDF5_USE_FILE_LOCKING=TRUE read a file another process holds locked"
  elif grep -q "locked.h5: cannot lock the file.*HDF5_USE_FILE_LOCKING=FALSE" "$work/err.txt" && [ "$(wc -l <"$work/err.txt")" -eq 1 ]; then
    pass "with HDF5_USE_FILE_LOCKING=TRUE a held lock is reported as a lock, not as damage"
  else
    bad "lock failure reported as: $(cat "$work/err.txt")"
  fi
  kill "$lock_holder" 2>/dev/null
  wait "$lock_holder" 2>/dev/null
  lock_holder=""
fi

# --- SIGKILL at random moments, then a rerun ------------------------------------------------------
# kill_loop NAME KILLS SPAN_MS WATCH STATE_CHECK CMD...: starts CMD KILLS times and kills it; after
# every kill STATE_CHECK must accept what is left. Odd kills come after a random delay within
# SPAN_MS (an uninterrupted run's duration); even ones as soon as a file matching the glob WATCH
# (a temporary name, %PID% standing for the run's process id) appears, so that they land inside a
# write. Runs resume, so later starts get further; a run that reached its end starts over.
kill_loop() {
  local name=$1 kills=$2 span=$3 watch=$4 check=$5; shift 5
  local k delay pid torn=0 finished=0 why glob state status
  for k in $(seq "$kills"); do
    "$@" >/dev/null 2>&1 &
    pid=$!
    if [ $((k % 2)) -eq 1 ]; then
      delay=$(((RANDOM * 32768 + RANDOM) % (span + 1)))
      sleep "$(printf '%d.%03d' $((delay / 1000)) $((delay % 1000)))"
    else
      # Polled with builtins only (no fork per turn): a checkpoint write lasts milliseconds. An
      # exited child stays a zombie (state Z) until waited for.
      glob=${watch//%PID%/$pid}
      while { read -r _ _ state _ <"/proc/$pid/stat"; } 2>/dev/null && [ "$state" != Z ] && ! compgen -G "$glob" >/dev/null; do :; done
    fi
    kill -9 "$pid" 2>/dev/null
    wait "$pid" 2>/dev/null
    status=$?
    [ "$status" -ne 137 ] && finished=$((finished + 1))
    # A .tmp- name carrying this run's pid: it was killed inside a write.
    [ -n "$(find "$work/killed" -name "*.tmp-$pid*" 2>/dev/null)" ] && torn=$((torn + 1))
    why=$($check) || { bad "$name: after kill $k: $why"; return; }
    # A run that got to its end before the kill: start over, so that later kills find work.
    [ "$status" -ne 137 ] && [ "$k" -lt "$kills" ] && find "$work/killed" -mindepth 1 -delete
  done
  echo "  $name: $kills kills; $torn left a .tmp- name (killed mid-write); $finished runs ended before their kill (then started over)"
  pass "$name: $kills SIGKILLs, and everything left under a final name was complete"
}

# Four epochs (32 steps, a checkpoint each), so that most kills find work left to interrupt.
train_yaml "$work/reference-run-4"
started=$(milliseconds)
"$dpo" train --config "$work/train.yaml" --set train.epochs=4 >/dev/null || bad "uninterrupted train (4 epochs)"
train_span=$(($(milliseconds) - started))
reference_model=$work/reference-run-4/final/model.safetensors
rm -rf "$work/killed"
train_yaml "$work/killed/run"
sed -i 's/epochs: 2/epochs: 4/' "$work/train.yaml"
kill_loop train 20 "$train_span" "$work/killed/run/checkpoints/*.tmp-%PID%" "checkpoints_complete $work/killed/run" "$dpo" train --config "$work/train.yaml"
rm -rf "$work/killed/run/final"
if "$dpo" train --config "$work/train.yaml" >"$work/out.txt" 2>&1 && cmp -s "$reference_model" "$work/killed/run/final/model.safetensors"; then
  pass "train after SIGKILLs: the final model is bit-identical to an uninterrupted run's"
else
  bad "train after SIGKILLs: $(tail -c 400 "$work/out.txt")"
fi
steps=$(grep -oE '"step": *[0-9]+' "$work/killed/run/metrics.jsonl" | grep -oE '[0-9]+' | tr '\n' ' ')
want=$(grep -oE '"step": *[0-9]+' "$work/reference-run-4/metrics.jsonl" | grep -oE '[0-9]+' | tr '\n' ' ')
[ "$steps" = "$want" ] && pass "metrics.jsonl after SIGKILLs has each step once" || bad "metrics.jsonl steps: $steps (want $want)"

partial_consistent() {
  local f
  for f in "$work/killed/ref.h5.partial" "$work/killed/ref.h5"; do
    [ -e "$f" ] || continue
    "$dpo" inspect "$f" >/dev/null 2>&1 || { echo "$f is unreadable"; return 1; }
  done
}
rm -rf "$work/killed" && mkdir -p "$work/killed"
precompute_yaml "$work/big-reference.h5" "$work/big/train.jsonl" "$work/big/eval.jsonl"
started=$(milliseconds)
"$dpo" precompute-ref --config "$work/precompute.yaml" >/dev/null || bad "uninterrupted precompute-ref (big)"
precompute_span=$(($(milliseconds) - started))
precompute_yaml "$work/killed/ref.h5" "$work/big/train.jsonl" "$work/big/eval.jsonl"
kill_loop precompute-ref 20 "$precompute_span" "$work/killed/ref.h5*.tmp-%PID%" partial_consistent "$dpo" precompute-ref --config "$work/precompute.yaml"
if "$dpo" precompute-ref --config "$work/precompute.yaml" >"$work/out.txt" 2>&1 &&
  why=$(same_logps "$work/big-reference.h5" "$work/killed/ref.h5"); then
  pass "precompute-ref after SIGKILLs equals an uninterrupted run"
else
  bad "precompute-ref after SIGKILLs: $(tail -c 300 "$work/out.txt") $why"
fi

echo "robustness writes: $passed passed, $failures failed"
[ "$failures" -eq 0 ]
