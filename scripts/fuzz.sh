#!/usr/bin/env bash
# Builds the libFuzzer harnesses of fuzz/ with clang (ASan + UBSan) into build-fuzz/ and runs each
# for a bounded time from a copy of its committed seed corpus (fuzz/corpus/<target>/, never grown
# here). Fails on any crash, sanitizer report, leak, timeout or out-of-memory.
#
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET [TARGET...]]
#   SECONDS_PER_TARGET  default $FUZZ_SECONDS, else 60; 0 builds only
#   TARGET              fuzz_safetensors_header fuzz_preference_jsonl fuzz_config fuzz_reference_file
#                       (default: all)
# FUZZ_JOBS sets the parallel compiles (default: nproc). Crash inputs land in
# build-fuzz/artifacts/<target>/; reproduce one with `build-fuzz/<target> <file>`.
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-${FUZZ_SECONDS:-60}}
[ $# -gt 0 ] && shift
all_targets=(fuzz_safetensors_header fuzz_preference_jsonl fuzz_config fuzz_reference_file)
targets=("$@")
[ ${#targets[@]} -eq 0 ] && targets=("${all_targets[@]}")

# The dpo sources each harness needs, as paths under src/ without .cpp: only these are compiled
# (not all of dpo_core).
sources_of() {
  case "$1" in
    fuzz_safetensors_header) echo io/durable_file io/json_input model/safetensors ;;
    fuzz_preference_jsonl) echo io/durable_file io/json_input io/compressed_input data/preference_jsonl data/truncation ;;
    fuzz_config) echo io/durable_file config/config config/text_distance config/trl_names ;;
    fuzz_reference_file)
      echo io/durable_file io/hdf5_handles io/json_input io/compressed_input io/timestamp reference/reference_store reference/fingerprint dist/communicator \
        config/config config/text_distance config/trl_names data/preference_data data/preference_jsonl \
        data/preference_hdf5 data/truncation ;;
    *) echo "fuzz: unknown target '$1' (known: ${all_targets[*]})" >&2; return 1 ;;
  esac
}

CXX=${FUZZ_CXX:-clang++-14}
command -v "$CXX" >/dev/null || { echo "fuzz: $CXX not found; run scripts/install_deps.sh" >&2; exit 1; }
out=build-fuzz
mkdir -p "$out/obj"
version=$(sed -n 's/^project(dpo VERSION \([0-9.]*\).*/\1/p' CMakeLists.txt)
read -r -a hdf5_flags <<<"$(pkg-config --cflags hdf5-openmpi)"
read -r -a hdf5_libs <<<"$(pkg-config --libs hdf5-openmpi)"
# -O1 -g: fast enough to fuzz, readable stacks. Sanitizer findings abort (no recovery) so that
# libFuzzer counts each as a crash.
cxxflags=(-std=c++17 -g -O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=all
  -D_GLIBCXX_USE_CXX11_ABI=1 "-DDPO_VERSION=\"$version\"" -Iinclude
  -isystem /usr/include/torch/csrc/api/include "${hdf5_flags[@]}")
# The system libraries (libtorch, HDF5, yaml-cpp, fmt, Open MPI) are not instrumented: their
# memory errors are not ours to find, only how our code uses them.
libs=(-Wl,--as-needed -ltorch_cpu -lc10 "${hdf5_libs[@]}" -lyaml-cpp -lfmt -lz)

# An object is rebuilt when missing or older than its source or any dpo header; all of them when
# the flags changed.
if [ "$(cat "$out/obj/flags" 2>/dev/null)" != "$CXX ${cxxflags[*]}" ]; then
  rm -f "$out"/obj/*.o
  echo "$CXX ${cxxflags[*]}" >"$out/obj/flags"
fi
stale() {
  local object=$1 source=$2
  [ ! -e "$object" ] || [ "$source" -nt "$object" ] || [ -n "$(find include/dpo -name '*.h' -newer "$object" -print -quit)" ]
}

echo "fuzz: building ${targets[*]} with $CXX into $out/"
build_start=$SECONDS
declare -A wanted=()
for target in "${targets[@]}"; do
  for name in $(sources_of "$target"); do wanted[$name]=1; done
done
compile_list=()
for name in "${!wanted[@]}"; do
  stale "$out/obj/${name//\//_}.o" "src/$name.cpp" && compile_list+=("src/$name.cpp:$out/obj/${name//\//_}.o:fuzzer-no-link")
done
for target in "${targets[@]}"; do
  stale "$out/obj/$target.o" "fuzz/$target.cpp" && compile_list+=("fuzz/$target.cpp:$out/obj/$target.o:fuzzer")
done
if [ ${#compile_list[@]} -gt 0 ]; then
  export CXX
  printf '%s\n' "${compile_list[@]}" | xargs -P "${FUZZ_JOBS:-$(nproc)}" -I{} bash -c '
    IFS=: read -r source object coverage <<<"{}"
    echo "  compile $source"
    "$CXX" "${@}" -fsanitize="$coverage" -c "$source" -o "$object.tmp" && mv "$object.tmp" "$object"
  ' _ "${cxxflags[@]}"
fi
for target in "${targets[@]}"; do
  objects=("$out/obj/$target.o")
  for name in $(sources_of "$target"); do objects+=("$out/obj/${name//\//_}.o"); done
  "$CXX" -fsanitize=fuzzer,address,undefined "${objects[@]}" "${libs[@]}" -o "$out/$target"
done
echo "fuzz: build took $((SECONDS - build_start)) s"
[ "$seconds" -eq 0 ] && exit 0  # build only

# detect_leaks: a leak is a failure (libFuzzer checks after every input that allocated more than it
# freed). libtorch and HDF5 keep their one-time allocations reachable from globals, which LSan does
# not report, so no suppressions are needed.
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:symbolize=1}
# llvm-14 installs the symbolizer under its own name only; without it stacks are bare addresses.
[ -x /usr/lib/llvm-14/bin/llvm-symbolizer ] && export ASAN_SYMBOLIZER_PATH=/usr/lib/llvm-14/bin/llvm-symbolizer
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
passed=0 failed=0
for target in "${targets[@]}"; do
  corpus="$out/corpus/$target" artifacts="$out/artifacts/$target/" log="$out/$target.log"
  rm -rf "$corpus" && mkdir -p "$corpus" "$artifacts"
  cp fuzz/corpus/"$target"/* "$corpus"/
  seeds=$(find "$corpus" -type f | wc -l)
  # -max_len 64 KiB: larger inputs only slow the search; -timeout 10 s per input; 2 GiB RSS.
  status=0
  "$out/$target" -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
    -print_final_stats=1 -print_funcs=0 -artifact_prefix="$artifacts" "$corpus" >"$log" 2>&1 || status=$?
  runs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1)
  rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1)
  found=$(find "$corpus" -type f | wc -l)
  if [ "$status" -eq 0 ] && ! grep -qE "ERROR: (AddressSanitizer|LeakSanitizer|libFuzzer)|runtime error:" "$log"; then
    passed=$((passed + 1))
    echo "fuzz: $target passed: ${runs:-?} executions in ${seconds} s (${rate:-?} exec/s), corpus $seeds -> $found inputs"
  else
    failed=$((failed + 1))
    echo "fuzz: $target FAILED (exit $status) after ${runs:-?} executions; log $log, inputs in $artifacts"
    grep -E "ERROR|runtime error|what\(\)|^fuzz_|SUMMARY|Test unit written" "$log" | head -20 || true
    # The stack without libFuzzer's, the sanitizers' and the C/C++ runtimes' frames.
    grep -E "^    #[0-9]+ " "$log" | grep -vE "fuzzer::|__sanitizer|libc\.so|libstdc\+\+|in _start|in main " | head -15 || true
  fi
done
echo "fuzz: ${#targets[@]} targets, $seconds s each"
echo "fuzz: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
