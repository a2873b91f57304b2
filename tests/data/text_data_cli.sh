#!/usr/bin/env bash
# Text preference data end to end, on a tiny Llama with the real Llama-3 tokenizer: train reads
# gzip-compressed TRL text directly; prepare-data under 1 and 2 ranks writes the same ids;
# precompute-ref + train on conversational text; and the recorded tokenization refuses a prepared
# file or a reference file when model.tokenizer holds another tokenizer or chat template.
# usage: text_data_cli.sh DPO MPIEXEC CACHE
set -uo pipefail
dpo=$1 mpiexec=$2 cache=${DPO_TOKENIZER_CACHE:-$3}
here=$(cd "$(dirname "$0")/.." && pwd)
. "$here/e2e_helpers.sh"
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
[[ -s "$cache/llama3/tokenizer.json" ]] || { echo "missing $cache/llama3: run scripts/fetch_tokenizers.sh"; exit 1; }

"$dpo" init-model --arch llama --out "$work/model" --set vocab_size=128256 --set hidden_size=32 \
  --set intermediate_size=64 --set num_hidden_layers=1 --set num_attention_heads=2 --set num_key_value_heads=1 >/dev/null
cp "$cache/llama3/tokenizer.json" "$cache/llama3/tokenizer_config.json" "$work/model/"
python3 - "$work" <<'PY'
import gzip, json, sys
work = sys.argv[1]
animals = ["cat", "dog", "owl", "fox", "émeu", "狐狸", "🦊", "yak"]
with gzip.open(f"{work}/standard.jsonl.gz", "wt", encoding="utf-8") as f:
    for i, a in enumerate(animals * 2):
        f.write(json.dumps({"prompt": f"Q{i}: name a {a}.", "chosen": f" A {a} is kind.", "rejected": f" No."}) + "\n")
with open(f"{work}/chat.jsonl", "w") as f:
    for i, a in enumerate(animals * 2):
        user = {"role": "user", "content": f"Tell me about the {a} ({i})."}
        f.write(json.dumps({"chosen": [user, {"role": "assistant", "content": f"The {a} is wonderful."}],
                            "rejected": [user, {"role": "assistant", "content": "I won't."}]}) + "\n")
PY
config() {  # config NAME DATA [extra yaml lines]
  cat > "$work/$1.yaml" <<YAML
run: {output_dir: $work/$1, seed: 1}
model: {policy: $work/model}
data: {train: $2, max_length: 64, max_prompt_length: 48}
train: {global_batch_size: 4, micro_batch_size: 2, max_steps: 2, warmup_steps: 0, lr: 1e-4, optimizer: adamw}
${3:-}
YAML
}

# 1. train reads gzip-compressed standard text directly, tokenized with model.policy's tokenizer.
config standard "$work/standard.jsonl.gz"
if out=$("$dpo" train --config "$work/standard.yaml" 2>&1) && grep -qF "text tokenized by $work/model: standard, explicit prompt; 0 boundary mismatches (kept); 16 pairs read" <<<"$out"; then
  pass "train reads gzip-compressed standard text and says how it was tokenized"
else
  bad "train on standard text: $out"
fi

# 2. prepare-data: one rank and two ranks write the same ids, in the input's order.
config prep1 "$work/chat.jsonl"
config prep2 "$work/chat.jsonl"
"$dpo" prepare-data --config "$work/prep1.yaml" > "$work/prep1.log" 2>&1 || bad "prepare-data, 1 rank: $(cat "$work/prep1.log")"
"$mpiexec" -n 2 --oversubscribe "$dpo" prepare-data --config "$work/prep2.yaml" > "$work/prep2.log" 2>&1 ||
  bad "prepare-data, 2 ranks: $(cat "$work/prep2.log")"
"$dpo" convert-data "$work/prep1/train.h5" "$work/prep1.jsonl" >/dev/null
"$dpo" convert-data "$work/prep2/train.h5" "$work/prep2.jsonl" >/dev/null
if cmp -s "$work/prep1.jsonl" "$work/prep2.jsonl" && [ "$(wc -l < "$work/prep1.jsonl")" = 16 ] &&
   grep -qE "16 rows, 16 pairs, 0 boundary mismatches \(kept\); read and tokenized in .* rows/s, .* MB/s .* over 2 rank" "$work/prep2.log"; then
  pass "prepare-data under 2 ranks writes the ids of 1 rank, and reports rows/s and MB/s"
else
  bad "prepare-data 1 vs 2 ranks differ: $(cat "$work/prep2.log")"
fi
if "$dpo" inspect "$work/prep1/train.h5" | grep -qF "tokenized with   tokenizer $work/model (fnv1a64:"; then
  pass "inspect shows the tokenization a prepared file records"
else
  bad "inspect of a prepared file: $("$dpo" inspect "$work/prep1/train.h5" 2>&1)"
fi
if "$dpo" inspect "$work/chat.jsonl" | grep -qF "preference data (text JSONL: conversational, implicit prompt), 16 records"; then
  pass "inspect names a text file's format"
else
  bad "inspect of a text file: $("$dpo" inspect "$work/chat.jsonl" 2>&1)"
fi

# 3. precompute-ref + train on conversational text; the prepared file trains the same way.
config chat "$work/chat.jsonl" "reference: {logps_path: $work/ref.h5}"
if "$dpo" precompute-ref --config "$work/chat.yaml" > "$work/pre.log" 2>&1 &&
   "$dpo" train --config "$work/chat.yaml" > "$work/chat.log" 2>&1; then
  pass "precompute-ref and train on conversational text"
else
  bad "precompute-ref + train on text: $(tail -3 "$work/pre.log" "$work/chat.log")"
fi
"$dpo" inspect "$work/ref.h5" | grep -qF "tokenized with   tokenizer=fnv1a64:" && pass "the reference file records the tokenization" ||
  bad "reference file without tokenization: $("$dpo" inspect "$work/ref.h5" 2>&1)"

# 4. Another chat template (one character more) or another tokenizer.json is refused by name.
mkdir "$work/other-template" "$work/other-tokenizer"
cp "$work/model/tokenizer.json" "$work/other-template/"
python3 - "$work/model/tokenizer_config.json" "$work/other-template/tokenizer_config.json" <<'PY'
import json, sys
c = json.load(open(sys.argv[1])); c["chat_template"] += " "; json.dump(c, open(sys.argv[2], "w"))
PY
cp "$work/model/tokenizer_config.json" "$work/other-tokenizer/"
{ cat "$work/model/tokenizer.json"; echo; } > "$work/other-tokenizer/tokenizer.json"
out=$("$dpo" train --config "$work/chat.yaml" --set run.output_dir="$work/t2" --set model.tokenizer="$work/other-template" 2>&1)
if [ $? -ne 0 ] && grep -qF "$work/ref.h5: was computed from $work/chat.jsonl tokenized otherwise" <<<"$out"; then
  pass "a reference file made with another chat template is refused"
else
  bad "reference file with another chat template: $out"
fi
out=$("$dpo" train --config "$work/prep1.yaml" --set data.train="$work/prep1/train.h5" \
  --set run.output_dir="$work/t3" --set model.tokenizer="$work/other-tokenizer" 2>&1)
if [ $? -ne 0 ] && grep -qF "data.train: $work/prep1/train.h5 was tokenized with the tokenizer of $work/model" <<<"$out"; then
  pass "a prepared file made with another tokenizer is refused naming both"
else
  bad "prepared file with another tokenizer: $out"
fi
out=$("$dpo" train --config "$work/prep1.yaml" --set data.train="$work/prep1/train.h5" --set run.output_dir="$work/t4" 2>&1)
if [ $? -eq 0 ] && grep -qF "prepared by dpo prepare-data with the tokenizer of $work/model" <<<"$out"; then
  pass "train reads a prepared file made with its tokenizer"
else
  bad "train on a prepared file: $out"
fi
[ "$failures" -eq 0 ] || { echo "$failures failure(s)"; exit 1; }
