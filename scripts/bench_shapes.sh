#!/usr/bin/env bash
# `dpo bench` on the three shapes of the speed issue (after scripts/build.sh), in fp32 and in
# bf16-mixed, each with train.prefix_sharing off and on side by side in one run:
#   b: GPT-2 L4 H8 d256 V8192, prompt 128 + response 128, 8 pairs
#   c: GPT-2 L12 H12 d768 V50304, prompt 256 + response 256, 2 pairs
#   d: Llama d256 L4 H8 KV4 FFN768 V8192 (tied), prompt 128 + response 128, 8 pairs
# scripts/bench_vs_eager.sh times an eager PyTorch DPO step on the same shapes.
#
# Usage: scripts/bench_shapes.sh [SHAPE...] (default: b c d); DPO_BENCH_FLAGS adds dpo bench flags
# (e.g. "--length-spread 0.5" for prompts and responses of varied length).
set -euo pipefail
cd "$(dirname "$0")/.."
dpo=build/dpo
work=out/bench
mkdir -p "$work"
[ -d "$work/shape-b" ] || $dpo init-model --arch gpt2 --out "$work/shape-b" --set n_embd=256 --set n_layer=4 \
  --set n_head=8 --set vocab_size=8192 --set n_positions=1024 >/dev/null
[ -d "$work/shape-c" ] || $dpo init-model --arch gpt2 --out "$work/shape-c" --set n_embd=768 --set n_layer=12 \
  --set n_head=12 --set vocab_size=50304 --set n_positions=1024 >/dev/null
[ -d "$work/shape-d" ] || $dpo init-model --arch llama --out "$work/shape-d" --set hidden_size=256 \
  --set num_hidden_layers=4 --set num_attention_heads=8 --set num_key_value_heads=4 --set intermediate_size=768 \
  --set vocab_size=8192 --set tie_word_embeddings=true >/dev/null
declare -A pairs=([b]=8 [c]=2 [d]=8) seq=([b]=256 [c]=512 [d]=256) steps=([b]=5 [c]=3 [d]=5)
for shape in "${@:-b c d}"; do
  for shape1 in $shape; do
    for precision in fp32 bf16-mixed; do
      echo "== shape $shape1, $precision"
      # shellcheck disable=SC2086
      $dpo bench --config configs/demo_dpo.yaml --set model.policy="$work/shape-$shape1" \
        --set run.output_dir="$work/run-$shape1" --set train.precision=$precision \
        --set train.global_batch_size=${pairs[$shape1]} --set train.micro_batch_size=${pairs[$shape1]} \
        --set data.max_length=${seq[$shape1]} --set data.max_prompt_length=$((seq[$shape1] / 2)) \
        --seq-len ${seq[$shape1]} --warmup 1 --steps ${steps[$shape1]} ${DPO_BENCH_FLAGS:-} \
        --compare train.prefix_sharing=false,true
    done
  done
done
