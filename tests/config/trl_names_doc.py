#!/usr/bin/env python3
"""docs/trl.md lists every TRL name of src/config/trl_names.cpp with its dpo key, and no other."""
import re
import sys

source, doc = (open(p, encoding="utf-8").read() for p in sys.argv[1:3])
known = re.findall(r'\{"([a-z0-9_]+)", "([^"]*)"', source)
listed = re.findall(r"^\| `([a-z0-9_]+)` \| `([^`]*)` \|", doc, re.M)
assert known, "no names found in the source"
missing = [k for k in known if k not in listed]
extra = [row for row in listed if row not in known]
assert not missing and not extra, f"missing from the doc: {missing}; not in the source: {extra}"
print(f"ok: {len(known)} TRL names documented")
