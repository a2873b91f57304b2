#!/usr/bin/env bash
# Checks the module layering of docs/architecture.md: every source and header of a module includes
# only dpo headers of its own module, of modules below it, or dpo/error.h. Prints each include
# that climbs back up (file:line and the two modules) and fails if there is any.
#
# Usage: scripts/check_layers.sh
set -euo pipefail
cd "$(dirname "$0")/.."

# Bottom layer first; the same order as the table of docs/architecture.md.
layers=(io config text data kernels model loss runtime dist reference watch train cli)
declare -A rank=()
for i in "${!layers[@]}"; do rank[${layers[$i]}]=$i; done

bad=0
for dir in src include/dpo; do
  for folder in "$dir"/*/; do
    module=$(basename "$folder")
    if [ -z "${rank[$module]+set}" ]; then
      echo "check_layers: $folder is not a module of the layer table (add it to scripts/check_layers.sh and docs/architecture.md)"
      bad=1
      continue
    fi
    while IFS=: read -r file line text; do
      used=$(sed -n 's|.*#include "dpo/\([a-z_0-9]*\)/.*|\1|p' <<<"$text")
      [ -n "$used" ] || continue
      if [ -z "${rank[$used]+set}" ]; then
        echo "check_layers: $file:$line includes dpo/$used/, which is not a module"
        bad=1
      elif [ "${rank[$used]}" -gt "${rank[$module]}" ]; then
        echo "check_layers: $file:$line: $module includes $used, a module later in the layer order"
        bad=1
      fi
    done < <(grep -Hn '#include "dpo/' "$folder"* || true)
  done
done
# Headers and sources belong to a module folder; only error.h sits at the top.
for file in src/* include/dpo/*; do
  [ -d "$file" ] || [ "$file" = include/dpo/error.h ] || { echo "check_layers: $file is outside every module"; bad=1; }
done
[ "$bad" -eq 0 ] && echo "check_layers: ${#layers[@]} modules, every include goes down the layers (${layers[*]})"
exit "$bad"
