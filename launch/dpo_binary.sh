# Sourced by the launchers. dpo_binary CHECKOUT: the dpo binary every rank runs, as an absolute path
# (remote nodes resolve it on the shared file system): $DPO_BIN, else CHECKOUT/build/dpo, else dpo on
# PATH. Prints an error and returns 2 when there is none.
dpo_binary() {
  local dpo=${DPO_BIN:-$1/build/dpo}
  [ -x "$dpo" ] || dpo=$(command -v dpo || true)
  if [ -z "$dpo" ] || [ ! -x "$dpo" ]; then
    echo "dpo: error: no dpo binary: set DPO_BIN or build the checkout (bash scripts/build.sh)" >&2
    return 2
  fi
  realpath "$dpo"
}
