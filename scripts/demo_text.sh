#!/usr/bin/env bash
# The text pipeline end to end (README, "From text preferences to a chat model, end to end"):
# TRL-format conversational JSONL -> prepare-data -> sft -> precompute-ref -> train -> generate, on
# a random tiny Llama that uses the real Llama-3 tokenizer and chat template. The task has a known
# answer (what an animal says): SFT on a careless annotator's answers teaches wrong sounds, DPO on
# pairs that prefer the right one fixes them, and the last step counts right answers of both.
# Assumes the build (scripts/build.sh); fetches the tokenizer files (scripts/fetch_tokenizers.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
dpo=build/dpo
work=out/text-demo
rm -rf "$work" && mkdir -p "$work/data"
start=$(date +%s)
bash scripts/fetch_tokenizers.sh >/dev/null
python3 scripts/make_text_demo_data.py "$work/data"
head -n1 "$work/data/train.jsonl"
$dpo init-model --arch llama --out "$work/init" --seed 1 --set vocab_size=128256 --set hidden_size=64 \
  --set intermediate_size=128 --set num_hidden_layers=2 >/dev/null
# The model's tokenizer and chat template, and where generation stops (end of text, end of turn),
# as a Llama-3 instruct directory has them; every model dpo saves carries them on.
cp build/tokenizers/llama3/tokenizer.json build/tokenizers/llama3/tokenizer_config.json "$work/init/"
echo '{"bos_token_id": 128000, "eos_token_id": [128001, 128009]}' > "$work/init/generation_config.json"
echo; echo "== 1. tokenize the preference pairs once (Llama-3 chat template; prompt/response split as TRL splits it)"
$dpo prepare-data --config configs/text_demo_prepare.yaml
echo; echo "== 2. SFT on a careless annotator's answers (text, tokenized at start)"
$dpo sft --config configs/text_demo_sft.yaml
echo; echo "== 3. the reference (SFT) model's log-probs, once"
$dpo precompute-ref --config configs/text_demo_dpo.yaml
echo; echo "== 4. DPO"
$dpo train --config configs/text_demo_dpo.yaml
echo; echo "== 5. generate (greedy) for one question per animal, with the SFT and the DPO model"
for model in sft dpo; do
  $dpo generate --model "$work/$model/final" --chat "$work/data/prompts.jsonl" --max-new-tokens 16 --temperature 0 \
    > "$work/generated-$model.jsonl"
  python3 - "$work/data/prompts.jsonl" "$work/generated-$model.jsonl" "$model" <<'PY'
import json, sys
prompts = [json.loads(l) for l in open(sys.argv[1])]
outputs = [json.loads(l) for l in open(sys.argv[2])]
right = sum(p["expect"] in o["completion"].lower() for p, o in zip(prompts, outputs))
for p, o in list(zip(prompts, outputs))[:3]:
    print(f'  {p["messages"][0]["content"]!r} -> {o["completion"]!r} ({o["finish_reason"]})')
print(f"{sys.argv[3]}: {right}/{len(prompts)} answers name the right sound")
PY
done
ls "$work/dpo/final"
echo; echo "text demo finished in $(( $(date +%s) - start )) s"
