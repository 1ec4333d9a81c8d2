#!/usr/bin/env python3
"""Writes a deterministic tree shaped like a Python/data-science image, for the eStargz conversion benchmark.

    generate_estargz_tree.py OUT SIZE_MB

Each top-level directory of OUT becomes one layer (sizes are shares of SIZE_MB, uncompressed):

  os/    15 %  /usr/share/doc-like small text (1-12 KiB) and /usr/lib shared objects (64 KiB-3 MiB, ~2.5:1)
  site/  45 %  a site-packages tree: thousands of small .py modules (0.2-24 KiB, some empty __init__.py),
               their __pycache__/*.pyc (text mixed with random bytes), dist-info metadata, and C-extension
               .so files (128 KiB-8 MiB, ~2.5:1)
  data/  40 %  large files: a CSV (text, ~3:1), a sparse float array (half zero pages), both compressible
               and many chunks long; an incompressible model blob and an incompressible .tar.gz archive

Same seed, same bytes: figures from different machines compare. Fast (randbytes and translate, not
per-byte Python), about 1 s per 50 MB.
"""
import os
import random
import sys

SEED = 20261201
KEYWORDS = ("def class return self import from as if elif else for while in not and or is None True False "
            "try except finally with yield lambda raise assert pass break continue global").split()
NAMES = ("array frame index value data result path config parser logger session buffer chunk offset size "
         "digest layer image manifest shape dtype axis mean sum count items keys values args kwargs name "
         "node tree graph cache state options context handler request response stream reader writer").split()
MASK_4BIT = bytes(b & 0x0F for b in range(256))   # translate table: random bytes -> 4 bits of entropy each


def python_source(rng, size):
    """Python-looking text, ~3.5:1 under gzip -9."""
    out, total, indent = [], 0, 0
    while total < size:
        kind = rng.random()
        if kind < 0.12:
            line = f"def {rng.choice(NAMES)}_{rng.choice(NAMES)}(self, {rng.choice(NAMES)}, {rng.choice(NAMES)}=None):"
            indent = 4
        elif kind < 0.16:
            line = f"class {rng.choice(NAMES).title()}{rng.choice(NAMES).title()}({rng.choice(NAMES).title()}):"
            indent = 4
        elif kind < 0.24:
            line = " " * indent + f'"""{" ".join(rng.choice(NAMES) for _ in range(rng.randint(4, 12)))}."""'
        elif kind < 0.30:
            line = f"from .{rng.choice(NAMES)} import {rng.choice(NAMES)}, {rng.choice(NAMES)}"
        else:
            words = [rng.choice(NAMES if rng.random() < 0.7 else KEYWORDS) for _ in range(rng.randint(2, 9))]
            line = " " * indent + f"{words[0]} = " + " ".join(words[1:]) + f"  # {rng.randint(0, 99999)}"
        out.append(line + "\n")
        total += len(line) + 1
    return "".join(out).encode()[:size]


def shared_object(rng, size):
    """~2.5:1: a third random (code), the rest 4-bit-entropy and repeated tables."""
    third = size // 3
    table = rng.randbytes(8192)
    return (rng.randbytes(third) + rng.randbytes(third).translate(MASK_4BIT)
            + (table * (size // 8192 + 1))[: size - 2 * third])


def pyc(rng, source):
    half = len(source) // 2
    return b"\xa7\r\r\n" + bytes(12) + rng.randbytes(half // 3) + source[:half]


def write(path, data, mode=0o644):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "wb") as f:
        f.write(data)
    os.chmod(path, mode)


def os_layer(rng, out, budget):
    docs = budget // 3
    n = 0
    while docs > 0:
        size = rng.randint(1024, 12 * 1024)
        write(f"{out}/os/usr/share/doc/pkg{n // 8:04d}/README{n % 8}", python_source(rng, size))
        docs -= size
        n += 1
    libs = budget - budget // 3
    n = 0
    while libs > 0:
        size = rng.randint(64 * 1024, 3 << 20)
        write(f"{out}/os/usr/lib/x86_64-linux-gnu/lib{n:03d}.so.1", shared_object(rng, size), 0o755)
        os.symlink(f"lib{n:03d}.so.1", f"{out}/os/usr/lib/x86_64-linux-gnu/lib{n:03d}.so")
        libs -= size
        n += 1


def site_layer(rng, out, budget):
    root = f"{out}/site/usr/lib/python3/site-packages"
    small = int(budget * 0.6)   # .py, .pyc, metadata
    ext = budget - small        # C extensions
    pkg = 0
    while small > 0:
        name = f"pkg{pkg:04d}"
        write(f"{root}/{name}/__init__.py", b"")
        for m in range(rng.randint(4, 40)):
            src = python_source(rng, int(rng.lognormvariate(8.3, 1.0)) % (24 * 1024) + 200)
            write(f"{root}/{name}/mod{m:02d}.py", src)
            code = pyc(rng, src)
            write(f"{root}/{name}/__pycache__/mod{m:02d}.cpython-313.pyc", code)
            small -= len(src) + len(code)
        meta = python_source(rng, rng.randint(800, 4000))
        write(f"{root}/{name}-1.{pkg % 10}.0.dist-info/METADATA", meta)
        write(f"{root}/{name}-1.{pkg % 10}.0.dist-info/RECORD", meta[: len(meta) // 2])
        write(f"{root}/{name}-1.{pkg % 10}.0.dist-info/INSTALLER", b"pip\n")
        small -= len(meta) * 3 // 2 + 4
        pkg += 1
    n = 0
    while ext > 0:
        size = rng.randint(128 * 1024, 8 << 20)
        write(f"{root}/pkg{n % max(pkg, 1):04d}/_ext{n:03d}.cpython-313-x86_64-linux-gnu.so", shared_object(rng, size), 0o755)
        ext -= size
        n += 1


def data_layer(rng, out, budget):
    base = f"{out}/data/opt/data"
    # CSV, 35 % of the layer
    rows, total, t = [], 0, 1767225600
    csv = int(budget * 0.35)
    while total < csv:
        t += rng.randint(1, 60)
        row = (f"{t},sensor_{rng.randint(0, 511):03d},{rng.gauss(20, 5):.4f},{rng.gauss(1013, 8):.2f},"
               f"{rng.random():.6f},{rng.choice(('ok', 'ok', 'ok', 'warn', 'fail'))}\n")
        rows.append(row)
        total += len(row)
    write(f"{base}/measurements.csv", "".join(rows).encode()[:csv])
    # sparse float array, 25 %: half zero pages, half 4-bit entropy
    arr = int(budget * 0.25)
    page = 64 * 1024
    parts = []
    for _ in range(arr // page + 1):
        parts.append(bytes(page) if rng.random() < 0.5 else rng.randbytes(page).translate(MASK_4BIT))
    write(f"{base}/field.npy", b"".join(parts)[:arr])
    # incompressible, 40 %: model weights and an already-compressed archive
    inc = budget - csv - arr
    write(f"{base}/model.safetensors", rng.randbytes(inc * 3 // 4))
    write(f"{base}/assets.tar.gz", rng.randbytes(inc - inc * 3 // 4))


def main(out, size_mb):
    rng = random.Random(SEED)
    budget = size_mb << 20
    os_layer(rng, out, int(budget * 0.15))
    site_layer(rng, out, int(budget * 0.45))
    data_layer(rng, out, budget - int(budget * 0.15) - int(budget * 0.45))


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit(__doc__)
    main(sys.argv[1], int(sys.argv[2]))
