# Sourced by the end-to-end test scripts: check bookkeeping and tiny inputs.
failures=0
pass() { echo "ok: $1"; }
bad() { echo "FAIL: $1"; failures=$((failures + 1)); }

# make_tiny_inputs DPO DIR TRAIN_PAIRS: a synthetic preference dataset (DIR/data/{train,eval}.jsonl)
# and a tiny random Llama (DIR/model).
make_tiny_inputs() {
  "$1" make-demo-data --out "$2/data" --train-pairs "$3" --eval-pairs 16 --vocab-size 64 >/dev/null
  "$1" init-model --arch llama --out "$2/model" --set vocab_size=64 --set hidden_size=32 --set intermediate_size=64 \
    --set num_attention_heads=4 --set num_key_value_heads=2 >/dev/null
}
