#!/usr/bin/env bash
# The GPU path in one command, on a machine with an NVIDIA GPU and CUDA PyTorch, no package
# registry needed (carry .gpu-bundle/ from scripts/gpu_bundle.sh along). Steps, each reported as
# PASS, FAIL or SKIP (with the reason) in the summary:
#   build         scripts/build_gpu.sh                                   needs a CUDA libtorch
#   cuda-tests    ctest -L cuda (tests/cuda/)                            needs a GPU
#   inputs        synthetic pairs; GPT-2 125M (768/12/12) and a ~1B Llama
#                 (2048 hidden, 16 layers, 16 heads, 5504 intermediate, vocab 32000)   any dpo build
#   train-*       a few DPO steps of each model in $PRECISION on cuda     needs a GPU
#   bench-*       dpo bench: tokens/s and MFU against the 8192^3 bf16 matmul measured in the same run
#   transformers  transformers' log-probs of the GPT-2 checkpoint dpo saved, against dpo's
#                 precompute-ref of the same pairs (float32)             needs a GPU and transformers
# Writes $OUT/summary.txt (the numbers) and $OUT/device_check.log when OUT is set, else under
# out/device_check/. Without a GPU it runs what needs none and says which steps need one.
# Environment: PRECISION (default bf16-mixed; empty: the config's default), DPO_BIN (a dpo
# binary for the steps that need no GPU when the GPU build is not possible), STEPS (train steps, 4),
# DPO_CHECK_DEVICE=cpu (a dry run of this script on a machine without a GPU: the train, bench and
# transformers steps on cpu with DPO_BIN, GPT-2 only and short rows; checks the script, not the GPU).
set -uo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root" || exit 1
out=${OUT:-$root/out/device_check}
work=$root/out/device_check/work
mkdir -p "$out" "$work"
summary=$out/summary.txt
log=$out/device_check.log
: >"$summary"
: >"$log"
precision=${PRECISION-bf16-mixed}
steps=${STEPS:-4}
failed=0

note() { echo "$*" | tee -a "$summary"; }
result() {  # result NAME STATUS DETAIL; ends with the seconds since the check began
  note "$(printf '%-14s %-5s %s [%d s]' "$1" "$2" "$3" "$SECONDS")"
  [ "$2" = FAIL ] && failed=1
  return 0
}
run_logged() { echo "+ $*" >>"$log"; "$@" >>"$log" 2>&1; }

note "dpo device check, $(date -u +%Y-%m-%dT%H:%M:%SZ) on $(hostname)"
gpu=""
if command -v nvidia-smi >/dev/null && nvidia-smi -L >/dev/null 2>&1; then gpu=$(nvidia-smi -L | head -n1); fi
note "gpu: ${gpu:-none found (nvidia-smi)}"
torch_cuda=$(python3 -c 'import torch; print(torch.__version__ if torch.version.cuda else "")' 2>/dev/null || true)
note "python3 torch with CUDA: ${torch_cuda:-none}"

# 1. Build.
dpo=""
if [ -n "$torch_cuda" ] || [ -n "${Torch_DIR:-}" ]; then
  # Only what the steps below run: the CPU unit tests would double the build's device time.
  if DPO_GPU_TARGETS=${DPO_GPU_TARGETS-dpo dpo_cuda_tests} run_logged bash scripts/build_gpu.sh; then
    dpo=$root/build-gpu/dpo
    # shellcheck disable=SC1091
    . build-gpu/env.sh
    result build PASS "build-gpu/ against $(grep -m1 -o 'NCCL [0-9.]* enabled' build-gpu/configure.log)"
  else
    result build FAIL "scripts/build_gpu.sh (see device_check.log)"
  fi
else
  result build SKIP "needs a CUDA libtorch (python3's CUDA PyTorch, or Torch_DIR)"
fi
on_gpu=0
[ -n "$dpo" ] && [ -n "$gpu" ] && on_gpu=1
needs_gpu() { result "$1" SKIP "needs a GPU and the GPU build${2:+ ($2)}"; }
device=${DPO_CHECK_DEVICE:-cuda}
dry_run=0
[ "$device" = cpu ] && [ -n "${DPO_BIN:-}" ] && dry_run=1

# 2. The CUDA-labelled tests.
if [ $on_gpu = 1 ]; then
  if (cd build-gpu && run_logged ctest -L cuda --output-on-failure); then
    result cuda-tests PASS "$(grep -o '[0-9]* tests passed\|100% tests passed, 0 tests failed out of [0-9]*' "$log" | tail -n1)"
  else
    result cuda-tests FAIL "ctest -L cuda (see device_check.log)"
  fi
else
  needs_gpu cuda-tests "ctest -L cuda"
fi

# 3. Inputs: any dpo binary makes them.
maker=${dpo:-${DPO_BIN:-}}
inputs=0
if [ -n "$maker" ] && [ -x "$maker" ]; then
  [ -f "$work/data/train.jsonl" ] || run_logged "$maker" make-demo-data --out "$work/data" --train-pairs 512 --eval-pairs 64 --vocab-size 256
  [ -f "$work/gpt2/config.json" ] || run_logged "$maker" init-model --arch gpt2 --out "$work/gpt2" --seed 1 \
    --set n_embd=768 --set n_layer=12 --set n_head=12 --set vocab_size=50257 --set n_positions=1024
  [ -f "$work/llama-1b/config.json" ] || run_logged "$maker" init-model --arch llama --out "$work/llama-1b" --seed 1 \
    --dtype bfloat16 --set hidden_size=2048 --set num_hidden_layers=16 --set num_attention_heads=16 \
    --set num_key_value_heads=16 --set intermediate_size=5504 --set vocab_size=32000 --set max_position_embeddings=2048
  head -n 64 "$work/data/train.jsonl" >"$work/data/compare.jsonl"
  if [ -f "$work/gpt2/config.json" ] && [ -f "$work/llama-1b/config.json" ] && [ -s "$work/data/compare.jsonl" ]; then
    inputs=1
    result inputs PASS "512 synthetic pairs, gpt2 $(du -sh "$work/gpt2" | cut -f1), llama-1b $(du -sh "$work/llama-1b" | cut -f1) (by $maker)"
  else
    result inputs FAIL "dpo make-demo-data / init-model (see device_check.log)"
  fi
else
  result inputs SKIP "no dpo binary (the GPU build failed or was skipped; DPO_BIN names another)"
fi

cat >"$work/run.yaml" <<EOF
run: {output_dir: $work/runs/unset, seed: 0, log_every: 1}
model: {policy: $work/gpt2, device: $device}
data: {train: $work/data/train.jsonl, max_length: 64, max_prompt_length: 32}
train: {global_batch_size: 32, micro_batch_size: 16, max_steps: $steps, optimizer: rmsprop, lr: 1.0e-6, warmup_steps: 0}
EOF
precision_args=()
[ -n "$precision" ] && precision_args=(--set "train.precision=$precision")

# 4. A few DPO steps of each model.
train() {  # train NAME MODEL
  local name=$1 model=$2 dir=$work/runs/$1
  rm -rf "$dir"
  if run_logged "$dpo" train --config "$work/run.yaml" --set model.policy="$model" --set run.output_dir="$dir" \
      "${precision_args[@]}"; then
    local last
    last=$(tail -n1 "$dir/metrics.jsonl")
    result "train-$name" PASS "$steps steps in ${precision:-default precision}: $(python3 -c 'import json,sys; m=json.loads(sys.argv[1]); print("loss %.4f, tokens/s %.0f, peak %.0f MiB" % (m["loss"], m.get("tokens_per_s", 0), m.get("peak_memory_mib", -1)))' "$last" 2>/dev/null || echo "$last")"
  else
    result "train-$name" FAIL "dpo train (see device_check.log)"
  fi
}
# 5. Throughput: rows of SEQ tokens, MICRO pairs per micro-batch.
bench() {  # bench NAME MODEL SEQ MICRO
  local name=$1 model=$2 seq=$3 micro=$4 text
  if text=$("$dpo" bench --config "$work/run.yaml" --set model.policy="$model" --set run.output_dir="$work/runs/bench-$name" \
      --set train.global_batch_size="$micro" --set train.micro_batch_size="$micro" --set data.max_length="$seq" \
      --set data.max_prompt_length=$((seq / 2)) "${precision_args[@]}" --seq-len "$seq" --warmup 2 --steps 5 2>>"$log"); then
    echo "$text" >>"$log"
    result "bench-$name" PASS "rows of $seq, $micro pairs: $(echo "$text" | grep -iE 'tokens/s|mfu|peak' | tr -s ' ' | paste -sd';' -)"
  else
    result "bench-$name" FAIL "dpo bench (see device_check.log)"
  fi
}
if [ $dry_run = 1 ] && [ $inputs = 1 ]; then
  dpo=$DPO_BIN
  note "dry run on cpu with $dpo: GPT-2 only, short rows (the numbers say nothing about a GPU)"
  train gpt2 "$work/gpt2"
  bench gpt2 "$work/gpt2" 128 1
elif [ $on_gpu = 1 ] && [ $inputs = 1 ]; then
  train gpt2 "$work/gpt2"
  train llama-1b "$work/llama-1b"
  bench gpt2 "$work/gpt2" 1024 8
  bench llama-1b "$work/llama-1b" 2048 4
else
  for step in train-gpt2 train-llama-1b bench-gpt2 bench-llama-1b; do needs_gpu "$step"; done
fi

# 6. transformers against dpo on the checkpoint dpo saved (float32 both sides).
[ $dry_run = 1 ] && on_gpu=1  # the steps below run on $device
if [ $on_gpu = 1 ] && [ -d "$work/runs/gpt2/final" ] && python3 -c 'import transformers, h5py' 2>/dev/null; then
  ref=$work/runs/gpt2-reference.h5
  rm -f "$ref"
  if run_logged "$dpo" precompute-ref --config "$work/run.yaml" --set model.reference="$work/runs/gpt2/final" \
      --set model.policy="$work/runs/gpt2/final" --set model.dtype=float32 --set data.train="$work/data/compare.jsonl" \
      --set run.output_dir="$work/runs/gpt2-reference" --set reference.logps_path="$ref" \
      ${precision:+--set train.precision=fp32} &&
     text=$(python3 scripts/compare_with_transformers.py "$work/runs/gpt2/final" "$work/data/compare.jsonl" "$ref" \
      --max-length 64 --device "$device" 2>>"$log"); then
    echo "$text" >>"$log"
    result transformers PASS "$(echo "$text" | tail -n1)"
  else
    echo "${text:-}" >>"$log"
    result transformers FAIL "$(echo "${text:-see device_check.log}" | tail -n1)"
  fi
elif [ $on_gpu = 1 ] && ! python3 -c 'import transformers, h5py' 2>/dev/null; then
  result transformers SKIP "python3 cannot import transformers and h5py"
else
  needs_gpu transformers "and a GPT-2 checkpoint from train-gpt2"
fi

note "summary: $([ $failed = 0 ] && echo 'no step failed' || echo 'FAILED steps above')"
exit $failed
