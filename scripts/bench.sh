#!/usr/bin/env bash
# The project's speed gauge on this machine (after scripts/build.sh): `dpo bench` on the demo model
# and on a GPT-2-small-sized model (d=768, 12 layers, 12 heads, vocab 50257, rows of 512 tokens),
# each reported as tokens/s and as a fraction of the matmul peak measured in the same run; then fp32
# against bf16-mixed on the GPT-2-small shape and on a 5M Llama (rows of 256), side by side.
set -euo pipefail
cd "$(dirname "$0")/.."
dpo=build/dpo
work=out/bench
mkdir -p "$work"
[ -d "$work/demo-model" ] || $dpo init-model --arch llama --out "$work/demo-model" --seed 1 --set vocab_size=64 >/dev/null
[ -d "$work/gpt2-small" ] || $dpo init-model --arch gpt2 --out "$work/gpt2-small" --set n_embd=768 --set n_layer=12 \
  --set n_head=12 --set vocab_size=50257 --set n_positions=1024 >/dev/null
echo "== demo model (configs/demo_dpo.yaml shapes: 16-pair micro-batches, rows of 16 tokens)"
$dpo bench --config configs/demo_dpo.yaml --set model.policy="$work/demo-model" --set run.output_dir="$work/run-demo" \
  --set train.global_batch_size=16 --seq-len 16 --warmup 3 --steps 20
echo
echo "== GPT-2-small-sized model, 1 pair (2 rows x 512 tokens) per step"
$dpo bench --config configs/demo_dpo.yaml --set model.policy="$work/gpt2-small" --set run.output_dir="$work/run-gpt2" \
  --set train.global_batch_size=1 --set train.micro_batch_size=1 --set data.max_length=512 \
  --set data.max_prompt_length=256 --seq-len 512 --warmup 1 --steps 3
echo
echo "== precision: fp32 against bf16-mixed on the same shapes, in this run"
[ -d "$work/llama-5m" ] || $dpo init-model --arch llama --out "$work/llama-5m" --set hidden_size=256 \
  --set num_hidden_layers=4 --set num_attention_heads=4 --set num_key_value_heads=4 --set intermediate_size=688 \
  --set vocab_size=4096 >/dev/null
echo "-- GPT-2-small-sized model, 1 pair (2 rows x 512 tokens) per step"
$dpo bench --config configs/demo_dpo.yaml --set model.policy="$work/gpt2-small" --set run.output_dir="$work/run-gpt2" \
  --set train.global_batch_size=1 --set train.micro_batch_size=1 --set data.max_length=512 \
  --set data.max_prompt_length=256 --seq-len 512 --warmup 1 --steps 3 --compare train.precision=fp32,bf16-mixed
echo "-- 5M Llama (hidden 256, 4 layers, vocab 4096), 4 pairs (8 rows x 256 tokens) per step"
$dpo bench --config configs/demo_dpo.yaml --set model.policy="$work/llama-5m" --set run.output_dir="$work/run-llama" \
  --set train.global_batch_size=4 --set train.micro_batch_size=4 --set data.max_length=256 \
  --set data.max_prompt_length=128 --seq-len 256 --warmup 2 --steps 5 --compare train.precision=fp32,bf16-mixed
