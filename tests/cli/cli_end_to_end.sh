#!/usr/bin/env bash
# End-to-end checks of the dpo binary: init-model, make-demo-data, convert-data, inspect, eval,
# and that bad input fails with one line naming what is wrong and leaves no output behind.
set -uo pipefail
dpo=$1
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
source "$(dirname "$0")/../e2e_helpers.sh"
# expect_error NAME PATTERN CMD...: CMD must exit non-zero with one stderr line matching PATTERN.
expect_error() {
  local name=$1 pattern=$2; shift 2
  if "$@" >"$work/out.txt" 2>"$work/err.txt"; then bad "$name: exited 0"; return; fi
  if grep -qE -- "$pattern" "$work/err.txt" && [ "$(wc -l <"$work/err.txt")" -eq 1 ]; then pass "$name"
  else bad "$name: stderr was: $(cat "$work/err.txt")"; fi
}
json_value() { grep -oE "\"$2\": *[-0-9.eE+]+" "$1" | sed -E 's/.*: *//'; }

"$dpo" --version | grep -qE '^dpo [0-9]' && pass "--version" || bad "--version"
"$dpo" eval --help | grep -q -- '--config' && pass "eval --help" || bad "eval --help"
expect_error "unknown command suggests" "did you mean 'eval'" "$dpo" evl
expect_error "unknown flag suggests" "did you mean '--config'" "$dpo" eval --confg x.yaml

"$dpo" make-demo-data --out "$work/data" --train-pairs 64 --eval-pairs 24 --vocab-size 128 >/dev/null || bad "make-demo-data"
"$dpo" init-model --arch llama --out "$work/llama" --set vocab_size=128 --set hidden_size=32 --set intermediate_size=64 \
  --set num_attention_heads=4 --set num_key_value_heads=2 >/dev/null || bad "init-model llama"
"$dpo" init-model --arch gpt2 --out "$work/gpt2" --set vocab_size=128 --set n_embd=32 --set n_head=4 --seed 3 >/dev/null \
  || bad "init-model gpt2"
"$dpo" init-model --arch llama --out "$work/llama2" --seed 7 --set vocab_size=128 --set hidden_size=32 \
  --set intermediate_size=64 --set num_attention_heads=4 --set num_key_value_heads=2 >/dev/null || bad "init-model llama2"
expect_error "init-model unknown key" "hidden_sise" "$dpo" init-model --arch llama --out "$work/x" --set hidden_sise=3
[ -e "$work/x" ] && bad "init-model left output behind" || pass "init-model error leaves nothing"
for m in llama gpt2; do
  [ -f "$work/$m/config.json" ] && [ -f "$work/$m/model.safetensors" ] && pass "$m directory" || bad "$m directory"
  "$dpo" inspect "$work/$m" | grep -qi "param" && pass "inspect $m" || bad "inspect $m"
done

"$dpo" inspect "$work/gpt2" | grep -q "attention bias: yes, mlp bias: yes" && pass "inspect: GPT-2 has biases" \
  || bad "inspect gpt2 biases: $("$dpo" inspect "$work/gpt2" | grep bias)"

# Every config.json field init-model knows can be set: special-token ids (a list too), head_dim,
# transformers 5's rope_parameters (whole or by key); generation_config.json carries the ids.
if "$dpo" init-model --arch llama --out "$work/ids" --set vocab_size=128 --set head_dim=32 --set bos_token_id=1 \
  --set 'eos_token_id=[2, 3]' --set rope_parameters.rope_theta=500000 --set rope_parameters.rope_type=default \
  >"$work/ids.txt" 2>&1; then
  tr -d ' \n' <"$work/ids/generation_config.json" | grep -q '"bos_token_id":1,"eos_token_id":\[2,3\]' \
    && pass "init-model writes generation_config.json" || bad "generation_config.json: $(cat "$work/ids/generation_config.json")"
  tr -d ' \n' <"$work/ids/config.json" | grep -q '"head_dim":32' && pass "init-model sets head_dim" || bad "head_dim not set"
  grep -q '"rope_theta"' <(grep -v '^    ' "$work/ids/config.json") && bad "a top-level rope_theta beside rope_parameters" \
    || pass "rope_parameters alone holds theta"
  grep -q "rope: theta 500000, scaling rope_parameters" "$work/ids.txt" && pass "inspect shows the rope" \
    || bad "rope line: $(grep rope "$work/ids.txt")"
else
  bad "init-model with ids and rope_parameters: $(cat "$work/ids.txt")"
fi
expect_error "init-model refuses a token id outside the vocabulary" "eos_token_id: 128 is not a token id" \
  "$dpo" init-model --arch llama --out "$work/x" --set vocab_size=128 --set eos_token_id=128

# JSONL -> HDF5 -> JSONL keeps every pair.
"$dpo" convert-data "$work/data/train.jsonl" "$work/train.h5" >/dev/null || bad "convert to hdf5"
"$dpo" convert-data "$work/train.h5" "$work/back.jsonl" >/dev/null || bad "convert back"
cmp -s "$work/data/train.jsonl" "$work/back.jsonl" && pass "jsonl -> hdf5 -> jsonl round trip" || bad "round trip differs"
"$dpo" inspect "$work/train.h5" | grep -q "64" && pass "inspect hdf5" || bad "inspect hdf5"

cat >"$work/run.yaml" <<YAML
run: {output_dir: $work/run}
model: {policy: $work/llama}
data: {eval: $work/data/eval.jsonl, max_length: 64, max_prompt_length: 32}
train: {micro_batch_size: 5, global_batch_size: 5}
YAML
if "$dpo" eval --config "$work/run.yaml" >"$work/eval.txt" 2>&1; then
  loss=$(json_value "$work/run/eval_metrics.json" loss)
  margin=$(json_value "$work/run/eval_metrics.json" "rewards/margins")
  awk -v l="$loss" -v m="$margin" 'BEGIN { exit !((l - 0.69314718 < 1e-6 && 0.69314718 - l < 1e-6) && m == 0) }' \
    && pass "policy == reference: loss ln 2, margins 0" || bad "policy == reference gave loss $loss margin $margin"
  [ -f "$work/run/config.eval.yaml" ] && pass "config.eval.yaml written" || bad "no config.eval.yaml"
else
  bad "eval failed: $(cat "$work/eval.txt")"
fi
"$dpo" eval --config "$work/run.yaml" --set run.output_dir="$work/run2" --set model.reference="$work/llama2" >/dev/null \
  && awk -v l="$(json_value "$work/run2/eval_metrics.json" loss)" 'BEGIN { exit !(l != 0.69314718) }' \
  && pass "a different reference gives a loss other than ln 2" || bad "eval with another reference"
"$dpo" eval --config "$work/run.yaml" --dump-config | grep -q "beta: 0.1" && pass "--dump-config" || bad "--dump-config"
"$dpo" eval --config "$work/run.yaml" --set model.policy="$work/gpt2" --set model.reference="$work/gpt2" \
  --set run.output_dir="$work/run3" >/dev/null && pass "eval gpt2" || bad "eval gpt2"

# Bad input: one line naming the key / file / line, and no eval_metrics.json left behind.
expect_error "unknown config key suggests" "did you mean 'loss.beta'" "$dpo" eval --config "$work/run.yaml" --set loss.bta=1
printf '{"prompt_input_ids": [1, 2], "chosen_input_ids": [3], "rejected_input_ids": [4]}\n{"prompt_input_ids": [1], "chosen_input_ids": [], "rejected_input_ids": [4]}\n' >"$work/bad.jsonl"
expect_error "empty response names file and line" "bad.jsonl:2.*chosen_input_ids" \
  "$dpo" eval --config "$work/run.yaml" --set data.eval="$work/bad.jsonl" --set run.output_dir="$work/bad"
[ -e "$work/bad/eval_metrics.json" ] && bad "eval_metrics.json written despite error" || pass "no output after bad input"
printf '{"prompt_input_ids": [1, 2], "chosen_input_ids": [3], "rejected_input_ids": [999]}\n' >"$work/oov.jsonl"
expect_error "id outside the vocabulary" "oov.jsonl:1.*rejected_input_ids" \
  "$dpo" eval --config "$work/run.yaml" --set data.eval="$work/oov.jsonl" --set run.output_dir="$work/bad"
expect_error "missing model dir" "nowhere" "$dpo" eval --config "$work/run.yaml" --set model.policy="$work/nowhere"

# No silent traps: eval against the policy itself says so; eval_every 0 evaluates at the end;
# eval_every without eval data warns; TRL's names point to dpo's keys.
"$dpo" eval --config "$work/run.yaml" --set run.output_dir="$work/self" 2>"$work/self.err" >/dev/null
grep -q "model.reference is model.policy itself" "$work/self.err" && pass "eval against the policy itself warns" \
  || bad "no warning for reference == policy: $(cat "$work/self.err")"
"$dpo" train --config "$work/run.yaml" --set data.train="$work/data/train.jsonl" --set train.max_steps=2 \
  --set train.warmup_steps=0 --set run.output_dir="$work/endeval" >/dev/null 2>&1 || bad "train with end-of-run eval"
[ "$(grep -c eval_loss "$work/endeval/metrics.jsonl")" -eq 1 ] && pass "eval_every 0: one eval at the end" \
  || bad "end-of-run eval lines: $(grep -c eval_loss "$work/endeval/metrics.jsonl")"
"$dpo" train --config "$work/run.yaml" --set data.train="$work/data/train.jsonl" --set data.eval="" \
  --set train.eval_every=1 --set train.max_steps=1 --set run.output_dir="$work/noeval" 2>"$work/noeval.err" >/dev/null
grep -q "eval_every is 1 but data.eval is not set" "$work/noeval.err" && pass "eval_every without eval data warns" \
  || bad "no eval_every warning: $(cat "$work/noeval.err")"
expect_error "a TRL name points to the dpo key" "TRL's .save_steps. is .train.save_every. here" \
  "$dpo" eval --config "$work/run.yaml" --set train.save_steps=10
printf 'beta: 0.1\nlearning_rate: 1e-6\n' >"$work/flat.yaml"
expect_error "a flat TRL config is pointed to the nested keys" "TRL's .beta. is .loss.beta. here.*nested" \
  "$dpo" train --config "$work/flat.yaml"

# inspect's output ends with a newline, whatever it describes.
for path in "$work/llama" "$work/gpt2" "$work/data/train.jsonl" "$work/train.h5"; do
  [ "$("$dpo" inspect "$path" | tail -c 1 | od -An -c | tr -d ' ')" = '\n' ] && pass "inspect $(basename "$path") ends with a newline" \
    || bad "inspect $path: no final newline"
done

[ "$failures" -eq 0 ] && echo "cli end-to-end: all checks passed" || { echo "cli end-to-end: $failures failed"; exit 1; }
