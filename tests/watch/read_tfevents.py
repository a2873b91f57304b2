#!/usr/bin/env python3
"""An independent reader of TensorBoard event files, for the tests of dpo's writer.

It shares no code with dpo and needs no protobuf library: the TFRecord framing, CRC-32C (with its
own table, checked on the standard test vector) and the protobuf wire format are decoded here by
hand, with the field numbers of TensorFlow's event.proto and summary.proto.

  read_tfevents.py check RUN_DIR [--resumed-from N]
      reads every event file of RUN_DIR/tensorboard in name order, as TensorBoard does, applies
      TensorBoard's purge at each SessionLog START (points at steps >= its step are dropped), and
      compares the scalars with RUN_DIR/metrics.jsonl: the same steps, names (train/<name>,
      eval/<name> for eval_<name>) and values to float32 precision. Also requires the config text
      (the text plugin's string tensor under the tag "config") holding RUN_DIR's output_dir, and,
      with --resumed-from N, a START marker at step N + 1.
  read_tfevents.py dump FILE
      prints each record as JSON (for a person).
"""
import json
import math
import os
import struct
import sys


def make_crc32c_table():
    table = []
    for byte in range(256):
        crc = byte
        for _ in range(8):
            crc = (crc >> 1) ^ 0x82F63B78 if crc & 1 else crc >> 1
        table.append(crc)
    return table


CRC_TABLE = make_crc32c_table()


def crc32c(data):
    crc = 0xFFFFFFFF
    for b in data:
        crc = CRC_TABLE[(crc ^ b) & 0xFF] ^ (crc >> 8)
    return crc ^ 0xFFFFFFFF


def masked(crc):
    return (((crc >> 15) | (crc << 17)) + 0xA282EAD8) & 0xFFFFFFFF


assert crc32c(b"123456789") == 0xE3069283, "crc32c test vector"


class Truncated(Exception):
    pass


def records(data, name):
    """The records of a TFRecord file; a truncated last record ends the file, as in TensorBoard."""
    pos = 0
    while pos < len(data):
        if pos + 12 > len(data):
            raise Truncated(f"{name}: truncated header at byte {pos}")
        header = data[pos:pos + 8]
        (length,) = struct.unpack("<Q", header)
        (length_crc,) = struct.unpack("<I", data[pos + 8:pos + 12])
        if masked(crc32c(header)) != length_crc:
            raise ValueError(f"{name}: bad length CRC at byte {pos}")
        if pos + 12 + length + 4 > len(data):
            raise Truncated(f"{name}: truncated record at byte {pos}")
        body = data[pos + 12:pos + 12 + length]
        (body_crc,) = struct.unpack("<I", data[pos + 12 + length:pos + 16 + length])
        if masked(crc32c(body)) != body_crc:
            raise ValueError(f"{name}: bad data CRC at byte {pos}")
        yield body
        pos += 16 + length


def varint(data, pos):
    value, shift = 0, 0
    while True:
        b = data[pos]
        pos += 1
        value |= (b & 0x7F) << shift
        shift += 7
        if not b & 0x80:
            return value, pos


def fields(data):
    """(field number, wire type, value) of a protobuf message: ints for varints, bytes otherwise."""
    pos = 0
    while pos < len(data):
        key, pos = varint(data, pos)
        number, wire = key >> 3, key & 7
        if wire == 0:
            value, pos = varint(data, pos)
        elif wire == 1:
            value, pos = data[pos:pos + 8], pos + 8
        elif wire == 2:
            length, pos = varint(data, pos)
            value, pos = data[pos:pos + length], pos + length
        elif wire == 5:
            value, pos = data[pos:pos + 4], pos + 4
        else:
            raise ValueError(f"wire type {wire}")
        yield number, wire, value


def signed64(v):
    return v - (1 << 64) if v >= 1 << 63 else v


def decode_value(data):
    """Summary.Value: tag 1, simple_value 2 (float), tensor 8, metadata 9."""
    out = {}
    for number, wire, value in fields(data):
        if number == 1:
            out["tag"] = value.decode()
        elif number == 2 and wire == 5:
            out["simple_value"] = struct.unpack("<f", value)[0]
        elif number == 9:
            for n, _, v in fields(value):  # SummaryMetadata: plugin_data 1 {plugin_name 1}, data_class 4
                if n == 1:
                    out["plugin_name"] = next((p.decode() for pn, _, p in fields(v) if pn == 1), "")
                elif n == 4:
                    out["data_class"] = v
        elif number == 8:
            tensor = {"string_val": []}  # TensorProto: dtype 1, tensor_shape 2, string_val 8
            for n, _, v in fields(value):
                if n == 1:
                    tensor["dtype"] = v
                elif n == 2:
                    tensor["dims"] = [d for dn, _, d in fields(v) if dn == 2]
                elif n == 8:
                    tensor["string_val"].append(v.decode())
            out["tensor"] = tensor
    return out


def decode_event(data):
    """Event: wall_time 1 (double), step 2, file_version 3, summary 5, session_log 7."""
    event = {"step": 0}
    for number, wire, value in fields(data):
        if number == 1 and wire == 1:
            event["wall_time"] = struct.unpack("<d", value)[0]
        elif number == 2 and wire == 0:
            event["step"] = signed64(value)
        elif number == 3:
            event["file_version"] = value.decode()
        elif number == 5:
            event["values"] = [decode_value(v) for n, _, v in fields(value) if n == 1]
        elif number == 7:
            event["session_status"] = next((v for n, _, v in fields(value) if n == 1), 0)
    return event


def event_files(run_dir):
    tb = os.path.join(run_dir, "tensorboard")
    return [os.path.join(tb, n) for n in sorted(os.listdir(tb)) if "tfevents" in n]


def read_run(run_dir):
    """TensorBoard's view of the run: {tag: {step: value}}, texts, START steps, files read."""
    scalars, texts, starts, problems = {}, {}, [], []
    files = event_files(run_dir)
    for path in files:
        with open(path, "rb") as f:
            data = f.read()
        events = []
        try:
            for body in records(data, path):
                events.append(decode_event(body))
        except Truncated as e:
            problems.append(str(e))
        if not events or events[0].get("file_version") != "brain.Event:2":
            raise SystemExit(f"{path}: the first record is not file_version brain.Event:2: {events[:1]}")
        if not events[0].get("wall_time", 0) > 1e9:
            raise SystemExit(f"{path}: the first record has no wall_time")
        for e in events:
            if e.get("session_status") == 1:  # START: TensorBoard purges steps >= e.step
                starts.append(e["step"])
                for series in scalars.values():
                    for s in [s for s in series if s >= e["step"]]:
                        del series[s]
            for v in e.get("values", []):
                if "simple_value" in v:
                    scalars.setdefault(v["tag"], {})[e["step"]] = v["simple_value"]
                elif "tensor" in v:
                    if v.get("plugin_name") != "text" or v["tensor"].get("dtype") != 7:
                        raise SystemExit(f"{path}: tensor {v['tag']} is not a text plugin string: {v}")
                    texts.setdefault(v["tag"], {})[e["step"]] = v["tensor"]["string_val"][0]
    return scalars, texts, starts, files, problems


def expected_scalars(run_dir):
    expected = {}
    with open(os.path.join(run_dir, "metrics.jsonl")) as f:
        for line in f:
            if not line.strip():
                continue
            j = json.loads(line)
            eval_line = any(k.startswith("eval_") for k in j)
            for key, value in j.items():
                if value is None:  # a non-finite value: JSON has no NaN, the event holds it as it is
                    value = math.nan
                if key == "step" or isinstance(value, bool) or not isinstance(value, (int, float)):
                    continue
                tag = "eval/" + key[5:] if eval_line else "train/" + key
                expected.setdefault(tag, {})[j["step"]] = value
    return expected


def float32(x):
    return struct.unpack("<f", struct.pack("<f", x))[0]


def check(run_dir, resumed_from):
    scalars, texts, starts, files, problems = read_run(run_dir)
    expected = expected_scalars(run_dir)
    bad = []
    if set(scalars) != set(expected):
        bad.append(f"tags differ: only in events {sorted(set(scalars) - set(expected))}, "
                   f"only in metrics.jsonl {sorted(set(expected) - set(scalars))}")
    points = 0
    for tag in sorted(set(scalars) & set(expected)):
        if sorted(scalars[tag]) != sorted(expected[tag]):
            bad.append(f"{tag}: steps {sorted(scalars[tag])} != metrics.jsonl's {sorted(expected[tag])}")
            continue
        for step, want in expected[tag].items():
            got = scalars[tag][step]
            points += 1
            if not (got == float32(want) or (math.isnan(want) and not math.isfinite(got))):
                bad.append(f"{tag} at step {step}: {got!r} != float32({want!r})")
    config = texts.get("config", {})
    output_dir = os.path.abspath(run_dir)
    if not config or not any(f"output_dir: {output_dir}" in t or output_dir in t for t in config.values()):
        bad.append(f"no config text naming {output_dir}: {texts}")
    if resumed_from is not None and resumed_from + 1 not in starts:
        bad.append(f"no SessionLog START at step {resumed_from + 1} (STARTs: {starts})")
    if resumed_from is None and starts:
        bad.append(f"START markers in a run never resumed: {starts}")
    for line in bad:
        print(f"read_tfevents: {run_dir}: {line}")
    print(f"read_tfevents: {len(files)} event file(s), {len(scalars)} tags, {points} points compared, "
          f"config text at steps {sorted(config)}, START at {starts}, truncated: {problems or 'none'}")
    return not bad


def main():
    if len(sys.argv) >= 3 and sys.argv[1] == "dump":
        with open(sys.argv[2], "rb") as f:
            for body in records(f.read(), sys.argv[2]):
                print(json.dumps(decode_event(body)))
        return 0
    if len(sys.argv) >= 3 and sys.argv[1] == "check":
        resumed = None
        if len(sys.argv) == 5 and sys.argv[3] == "--resumed-from":
            resumed = int(sys.argv[4])
        return 0 if check(sys.argv[2], resumed) else 1
    print(__doc__)
    return 2


if __name__ == "__main__":
    sys.exit(main())
