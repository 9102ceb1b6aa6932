"""Live heap at a dhat profile's peak, per socket, charged to crates.

Usage: dhat_by_crate.py DHAT_JSON SOCKETS [SITES_PER_CRATE]

Each allocation goes to the first function on its stack (from the allocation outward)
whose crate is not a data structure, the allocator or the runtime: a room's hash set
is charged to socketioxide's adapter, a spawned task to whoever spawned it.
"""

import collections
import json
import re
import sys

NOT_OWNERS = {
    "alloc", "core", "std", "__rustc", "hashbrown", "indexmap", "smallvec", "bytes", "http",
    "tokio", "futures_util", "futures_core", "tracing", "serde", "serde_json",
    "dashmap", "parking_lot", "lock_api",
}
CRATE = re.compile(r"^<?&?(?:mut )?([a-z_][a-z0-9_]*)::")


def owner(frames, table):
    for i in frames[1:]:
        name = table[i].split(": ", 1)[-1]
        m = CRATE.match(name)
        if m and m.group(1) not in NOT_OWNERS:
            return m.group(1), name[:140]
    return "?", table[frames[-1]][:140]


def main():
    profile = json.load(open(sys.argv[1]))
    sockets = int(sys.argv[2])
    per_crate = int(sys.argv[3]) if len(sys.argv) > 3 else 8
    table = profile["ftbl"]
    bytes_by = collections.Counter()
    sites = collections.defaultdict(collections.Counter)
    for pp in profile["pps"]:
        live = pp.get("gb", 0)
        if live:
            crate, site = owner(pp["fs"], table)
            bytes_by[crate] += live
            sites[crate][site] += live
    total = sum(bytes_by.values())
    print(f"live at the peak: {total} B, {total / sockets:.0f} B per socket over {sockets}")
    for crate, b in bytes_by.most_common():
        if b / sockets < 5:
            continue
        print(f"{b / sockets:9.1f}  {crate}")
        for site, sb in sites[crate].most_common(per_crate):
            if sb / sockets >= 5:
                print(f"          {sb / sockets:9.1f}  {site}")


if __name__ == "__main__":
    main()
