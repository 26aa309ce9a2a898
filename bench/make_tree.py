#!/usr/bin/env python3
"""make_tree.py DIR SCALE - a reproducible file tree of about SCALE GB for bench/peers.sh.

The same seed gives the same bytes on every machine. Per GB: 60 % compressible text in 2 000 files of
~300 KiB (words drawn from a fixed vocabulary, like documentation and source), 20 % random bytes in 20
files of ~10 MiB (media, already compressed data), and 20 % in ~80 000 small files of ~2.5 KiB spread
over 800 directories (configuration, small uploads): about 82 000 files per GB.
"""
import os
import random
import sys

root, scale = sys.argv[1], float(sys.argv[2])
rng = random.Random(20261205)
words = ["".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 10))) for _ in range(5000)]


def text(n: int) -> bytes:
    out, size = [], 0
    while size < n:
        line = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14))) + "\n"
        out.append(line)
        size += len(line)
    return "".join(out).encode()[:n]


def write(path: str, data: bytes) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)


for i in range(int(2000 * scale)):
    write(f"{root}/docs/{i % 50:02d}/doc{i:05d}.txt", text(300 * 1024 + rng.randint(-50000, 50000)))
for i in range(max(1, int(20 * scale))):
    write(f"{root}/media/blob{i:03d}.bin", rng.randbytes(10 * 1024 * 1024))
for i in range(int(80000 * scale)):
    data = text(rng.randint(500, 4500)) if i % 3 else rng.randbytes(rng.randint(500, 4500))
    write(f"{root}/small/{i % 800:03d}/f{i:06d}.cfg", data)
