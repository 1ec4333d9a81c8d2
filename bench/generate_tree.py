#!/usr/bin/env python3
"""Writes a deterministic directory tree shaped like a scientific container image, as layer tar inputs.

Each top-level directory of OUT becomes one layer: base/ (many small text files, like /usr/share and
python sources), libs/ (medium binaries, partly compressible, like .so files), app/ (small scripts) and
data/ (an incompressible asset). Same seed, same bytes: runs on different machines compare.
"""
import os
import random
import sys

WORDS = ("import numpy pandas def class return self data frame array value index column result "
         "float int str list dict for in if else while try except with open read write path "
         "the of and to a is that it on as be by this are from or have an which").split()


def text_blob(rng, size):
    out = []
    total = 0
    while total < size:
        line = " ".join(rng.choice(WORDS) for _ in range(rng.randint(3, 12))) + "\n"
        out.append(line)
        total += len(line)
    return "".join(out).encode()[:size]


def binary_blob(rng, size):
    # Half random, half repeated structure: compresses about 2:1 like shared libraries.
    half = size // 2
    pattern = rng.randbytes(4096)
    return rng.randbytes(half) + (pattern * (size // 4096 + 1))[: size - half]


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def main(out, scale_mb):
    rng = random.Random(20261129)
    budget = scale_mb * 1024 * 1024
    # base: 30 % of bytes in 1-16 KiB text files
    base_bytes = int(budget * 0.30)
    n = 0
    while base_bytes > 0:
        size = rng.randint(1024, 16384)
        write(f"{out}/base/usr/share/pkg{n // 200:03d}/file{n:05d}.txt", text_blob(rng, size))
        base_bytes -= size
        n += 1
    # libs: 45 % in 64 KiB - 4 MiB binaries
    lib_bytes = int(budget * 0.45)
    n = 0
    while lib_bytes > 0:
        size = rng.randint(64 * 1024, 4 * 1024 * 1024)
        write(f"{out}/libs/usr/lib/python3/dist-packages/mod{n // 20:02d}/lib{n:04d}.so", binary_blob(rng, size), 0o755)
        lib_bytes -= size
        n += 1
    # app: 5 % in small scripts
    app_bytes = int(budget * 0.05)
    n = 0
    while app_bytes > 0:
        size = rng.randint(512, 8192)
        write(f"{out}/app/opt/etl/stage{n:04d}.py", text_blob(rng, size), 0o755)
        app_bytes -= size
        n += 1
    # data: 20 % incompressible
    write(f"{out}/data/opt/etl/reference.bin", rng.randbytes(int(budget * 0.20)))


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 300)
