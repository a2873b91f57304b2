#!/usr/bin/env python3
"""`dpo prepare-data` on TRL's four text preference formats gives, row for row, the prompt, chosen
and rejected ids that TRL's rules give with Hugging Face's tokenizers and chat templates (the
goldens of scripts/make_text_preference_goldens.sh), counts the same boundary mismatches, and
reads the same file gzip-compressed to the same ids; with data.boundary_mismatch: skip it keeps
exactly the other pairs, with error it stops naming the first mismatched line (these last three
with the first tokenizer of each file).

usage: prepare_data_cli.py DPO FIXTURES TOKENIZER_CACHE SCRATCH
  FIXTURES: tests/fixtures/text_preferences; TOKENIZER_CACHE: what scripts/fetch_tokenizers.sh
  filled ($DPO_TOKENIZER_CACHE overrides it); SCRATCH: a directory for configs and outputs.
  $DPO_PREPARE_DATA_MPIEXEC (optional, e.g. "mpirun -np 3 --oversubscribe"): also run each file
  under it once and compare with the goldens.
Exits non-zero naming each golden that differs at its first difference (file, row, field, both
id lists around the first differing index)."""
import gzip
import json
import os
import re
import shlex
import shutil
import subprocess
import sys

MISMATCHES = re.compile(r"(\d+) boundary mismatch(?:es)?\b")


def fail(message):
    sys.exit(f"prepare_data_cli: {message}")


def read_jsonl(path):
    with open(path, encoding="utf-8") as f:
        return [json.loads(line) for line in f if line.strip()]


def run(command, what):
    try:
        result = subprocess.run(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    except OSError as error:
        raise RuntimeError(f"{what}: cannot run {command[0]}: {error}") from error
    if result.returncode != 0:
        raise RuntimeError(f"{what} exited {result.returncode}: {result.stdout.strip()[-2000:]}")
    return result.stdout


def write_config(path, tokenizer_dir, train, output_dir):
    # YAML reads JSON strings, so any path is quoted safely. The tokenizer directory serves as the
    # policy: prepare-data reads no weights.
    q = json.dumps
    with open(path, "w", encoding="utf-8") as f:
        f.write(f"run: {{output_dir: {q(output_dir)}}}\n")
        f.write(f"model: {{policy: {q(tokenizer_dir)}, tokenizer: {q(tokenizer_dir)}}}\n")
        f.write(f"data: {{train: {q(train)}}}\n")


def prepare(dpo, tokenizer_dir, train, case_dir, overrides=(), launcher=()):
    """Runs prepare-data then convert-data; returns (rows, boundary mismatches printed)."""
    os.makedirs(case_dir, exist_ok=True)
    output_dir = os.path.join(case_dir, "out")
    shutil.rmtree(output_dir, ignore_errors=True)
    config = os.path.join(case_dir, "config.yaml")
    write_config(config, tokenizer_dir, train, output_dir)
    command = list(launcher) + [dpo, "prepare-data", "--config", config] + [a for o in overrides for a in ("--set", o)]
    printed = run(command, " ".join(command[1:]))
    # The count of data.train's line (its report line names the key); any other line that counts
    # mismatches (a load summary) must agree with it.
    lines = [line for line in printed.splitlines() if MISMATCHES.search(line)]
    counts = {int(MISMATCHES.search(line).group(1)) for line in lines}
    if not any("data.train" in line for line in lines) or len(counts) != 1:
        raise RuntimeError(f"dpo prepare-data printed no single boundary mismatch count for data.train:\n{printed}")
    converted = os.path.join(output_dir, "train.jsonl")
    run([dpo, "convert-data", os.path.join(output_dir, "train.h5"), converted], "dpo convert-data")
    return read_jsonl(converted), counts.pop()


def around(ids, index):
    start = max(0, index - 4)
    return f"[{'... ' if start else ''}{', '.join(map(str, ids[start:index + 5]))}{' ...' if index + 5 < len(ids) else ''}]"


def first_difference(rows, goldens, name):
    if len(rows) != len(goldens):
        return f"{name}: dpo wrote {len(rows)} pairs, the golden has {len(goldens)}"
    for number, (row, golden) in enumerate(zip(rows, goldens), 1):
        for field in ("prompt_input_ids", "chosen_input_ids", "rejected_input_ids"):
            got, want = row.get(field), golden[field]
            if got == want:
                continue
            if got is None:
                return f"{name}: row {number}: {field} missing in dpo's output"
            index = next((k for k, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))
            return (f"{name}: row {number}: {field} differs at index {index} (lengths {len(got)} vs {len(want)}): "
                    f"dpo {around(got, index)} golden {around(want, index)}")
    return None


def check(dpo, fixtures, cache, scratch, key, expected, first_of_file):
    tokenizer, file = key.split(".", 1)
    tokenizer_dir = os.path.join(cache, tokenizer)
    train = os.path.join(fixtures, file + ".jsonl")
    goldens = read_jsonl(os.path.join(fixtures, "goldens", f"{key}.jsonl"))
    if len(goldens) != expected["pairs"]:
        fail(f"goldens/{key}.jsonl has {len(goldens)} lines, summary.json says {expected['pairs']}")
    rows, mismatches = prepare(dpo, tokenizer_dir, train, os.path.join(scratch, key))
    problems = []
    difference = first_difference(rows, goldens, f"{file}.jsonl with {tokenizer}")
    if difference:
        problems.append(difference)
    if mismatches != expected["boundary_mismatches"]:
        problems.append(f"{file}.jsonl with {tokenizer}: dpo counts {mismatches} boundary mismatches, "
                        f"TRL's rule {expected['boundary_mismatches']}")
    # Reading gzip and the skip/error policies do not depend on the tokenizer: checked with the
    # first tokenizer of each file only, to keep the test short (each dpo run loads a tokenizer).
    if not first_of_file:
        return problems
    # The same rows gzip-compressed give the same ids.
    compressed = os.path.join(scratch, key, file + ".jsonl.gz")
    with open(train, "rb") as plain, gzip.open(compressed, "wb") as packed:
        shutil.copyfileobj(plain, packed)
    gz_rows, gz_mismatches = prepare(dpo, tokenizer_dir, compressed, os.path.join(scratch, key, "gz"))
    if gz_rows != rows or gz_mismatches != mismatches:
        problems.append(f"{file}.jsonl.gz with {tokenizer}: not the ids (or count) of the uncompressed file"
                        f" ({first_difference(gz_rows, rows, 'gz vs plain') or f'{gz_mismatches} vs {mismatches} mismatches'})")
    # Under mpirun (when $DPO_PREPARE_DATA_MPIEXEC gives the launcher, e.g. "mpirun -np 3
    # --oversubscribe"), the ranks split the rows and the file holds the same pairs in file order.
    launcher = shlex.split(os.environ.get("DPO_PREPARE_DATA_MPIEXEC", ""))
    if launcher:
        mpi_rows, mpi_mismatches = prepare(dpo, tokenizer_dir, train, os.path.join(scratch, key, "mpi"), launcher=launcher)
        difference = first_difference(mpi_rows, goldens, f"{file}.jsonl with {tokenizer} under {' '.join(launcher)}")
        if difference or mpi_mismatches != mismatches:
            problems.append(difference or f"{file}.jsonl under {' '.join(launcher)}: {mpi_mismatches} boundary mismatches, not {mismatches}")
    problems += check_mismatch_policies(dpo, tokenizer_dir, train, os.path.join(scratch, key), goldens, expected)
    return problems


def check_mismatch_policies(dpo, tokenizer_dir, train, case_dir, goldens, expected):
    """data.boundary_mismatch: skip keeps exactly the other pairs; error stops naming the first
    mismatched line."""
    lines = expected["boundary_mismatch_lines"]
    if not lines:
        return []
    name = f"{os.path.basename(train)} with {os.path.basename(tokenizer_dir)}"
    problems = []
    rows, _ = prepare(dpo, tokenizer_dir, train, os.path.join(case_dir, "skip"), ["data.boundary_mismatch=skip"])
    kept = [golden for number, golden in enumerate(goldens, 1) if number not in lines]
    difference = first_difference(rows, kept, f"{name} (data.boundary_mismatch: skip)")
    if difference:
        problems.append(difference)
    config = os.path.join(case_dir, "skip", "config.yaml")
    result = subprocess.run([dpo, "prepare-data", "--config", config, "--set", "data.boundary_mismatch=error"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    where = f"{os.path.basename(train)}:{lines[0]}:"
    if result.returncode == 0 or where not in result.stdout:
        problems.append(f"{name} (data.boundary_mismatch: error): expected a failure naming {where}, got exit "
                        f"{result.returncode}: {result.stdout.strip()[-500:]}")
    return problems


def main():
    if len(sys.argv) != 5:
        fail("usage: prepare_data_cli.py DPO FIXTURES TOKENIZER_CACHE SCRATCH")
    dpo, fixtures, cache, scratch = sys.argv[1], sys.argv[2], os.environ.get("DPO_TOKENIZER_CACHE") or sys.argv[3], sys.argv[4]
    # Absolute paths in the configs, so that they hold from any working directory.
    fixtures, cache, scratch = (os.path.abspath(p) for p in (fixtures, cache, scratch))
    with open(os.path.join(fixtures, "goldens", "summary.json"), encoding="utf-8") as f:
        summary = json.load(f)
    for tokenizer in sorted({key.split(".", 1)[0] for key in summary}):
        files = [os.path.join(cache, tokenizer, name) for name in ("tokenizer.json", "tokenizer_config.json")]
        if not all(os.path.isfile(f) and os.path.getsize(f) > 0 for f in files):
            fail(f"missing {cache}/{tokenizer}: run scripts/fetch_tokenizers.sh")
    os.makedirs(scratch, exist_ok=True)
    problems = []
    seen_files = set()
    for key, expected in summary.items():
        file = key.split(".", 1)[1]
        try:
            found = check(dpo, fixtures, cache, scratch, key, expected, file not in seen_files)
        except RuntimeError as error:
            found = [f"{key}: {error}"]
        seen_files.add(file)
        problems += found
        print(f"{'FAIL' if found else 'ok'}: {key}: {expected['pairs']} pairs, "
              f"{expected['boundary_mismatches']} boundary mismatches", flush=True)
    for problem in problems:
        print(problem, file=sys.stderr)
    if problems:
        sys.exit(1)
    print(f"ok: dpo prepare-data equals TRL's rule on all {len(summary)} tokenizer/format goldens, "
          "and on gzip input and data.boundary_mismatch skip/error"
          + (f", and under {os.environ['DPO_PREPARE_DATA_MPIEXEC']}" if os.environ.get("DPO_PREPARE_DATA_MPIEXEC") else ""))


if __name__ == "__main__":
    main()
