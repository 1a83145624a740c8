#!/usr/bin/env python3
"""Writes the seed conversations of the server_frames target: what Durus
clients send (spec 7), against the target's base file (oid 0 -> oid 1).
Run from fuzz/: python3 seeds/make_server_frames.py"""
import struct

def u32(n): return struct.pack(">I", n)
def oid(n): return struct.pack(">Q", n)

def record(o, data, refs=()):
    return oid(o) + u32(len(data)) + data + b"".join(oid(r) for r in sorted(refs))

def commit(*records):
    tx = b"".join(u32(8 + len(r)) + r[:8] + r for r in records)
    return b"C" + u32(len(tx)) + tx

HELLO = b"V" + u32(1)
SEEDS = {
    "reads": HELLO + b"L" + oid(0) + b"L" + oid(1) + b"L" + oid(7)
    + b"B" + u32(3) + oid(0) + oid(1) + oid(9) + b"S" + b".",
    "commit": HELLO + b"N" + b"M\x02"
    + commit(record(0, b"new root", [2]), record(2, b"two", [3]), record(3, b"three"))
    + b"L" + oid(2) + b"S" + b".",
    "commit_then_pack": HELLO + b"N"
    + commit(record(0, b"root without the child", [2]), record(2, b"two"))
    + b"P" + b"L" + oid(1) + b"L" + oid(2) + b"S" + b".",
    "abandoned_commit": HELLO + b"N" + b"C" + u32(0) + b"L" + oid(0) + b".",
    "commit_of_an_oid_not_handed_out": HELLO + commit(record(5, b"five")) + b".",
    "quit": HELLO + b"Q",
}

for name, data in SEEDS.items():
    with open(f"seeds/server_frames/{name}", "wb") as f:
        f.write(data)
