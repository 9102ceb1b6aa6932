#!/usr/bin/env bash
# Fails when Cargo.lock holds a crate version older than security/minimum-versions.toml
# allows: the offline stand-in for cargo-audit (see docs/security.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 - Cargo.lock security/minimum-versions.toml <<'PY'
import re, sys, tomllib

lock = tomllib.load(open(sys.argv[1], "rb"))
minimums = tomllib.load(open(sys.argv[2], "rb"))["crate"]

def key(v):
    # Release numbers only: a pre-release of the minimum counts as older.
    core, _, pre = v.partition("-")
    nums = tuple(int(n) for n in re.findall(r"\d+", core)[:3])
    return nums + ((0,) if pre else (1,))

found = {}
for p in lock["package"]:
    found.setdefault(p["name"], []).append(p["version"])
bad = 0
for m in minimums:
    for v in found.get(m["name"], []):
        if key(v) < key(m["min"]):
            print(f"advisory: {m['name']} {v} < {m['min']}: {m['why']}")
            bad += 1
checked = sum(len(found.get(m["name"], [])) for m in minimums)
if bad:
    print(f"{bad} crate version(s) in Cargo.lock need an update (cargo update -p NAME)")
    sys.exit(1)
print(f"advisories: {checked} locked versions of {len(minimums)} listed crates at or above their fixed versions")
PY
