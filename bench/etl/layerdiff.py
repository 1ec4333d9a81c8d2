#!/usr/bin/env python3
"""Compute an OCI layer as the difference between two root filesystem trees.

    layerdiff.py BASE NEW LIST WHITEOUTS

Writes to LIST the paths (relative, "./"-prefixed, NUL-separated, parents before children) that are new or
changed in NEW compared with BASE, with the parent directories of each, for `tar --null --no-recursion -T`.
Writes to WHITEOUTS the topmost paths of BASE that NEW no longer has (one per line), which the layer must
delete with `.wh.` entries. A file counts as changed when its type, mode, owner, size, mtime or (symlinks)
target differs. Prints a one-line summary.
"""
import os
import stat
import sys

base, new, list_path, wh_path = sys.argv[1:5]


def signature(st, path):
    kind = stat.S_IFMT(st.st_mode)
    sig = (kind, st.st_mode, st.st_uid, st.st_gid)
    if stat.S_ISREG(kind):
        sig += (st.st_size, st.st_mtime_ns)
    elif stat.S_ISLNK(kind):
        sig += (os.readlink(path),)
    elif stat.S_ISDIR(kind):
        sig += (st.st_mtime_ns,)
    elif stat.S_ISCHR(kind) or stat.S_ISBLK(kind):
        sig += (st.st_rdev,)
    return sig


def walk(root):
    """Relative paths of every entry under root (not root itself)."""
    for directory, dirs, files in os.walk(root):
        rel_dir = os.path.relpath(directory, root)
        for name in dirs + files:
            yield os.path.normpath(os.path.join(rel_dir, name))


changed = set()
new_paths = set()
for rel in walk(new):
    new_paths.add(rel)
    path_new, path_base = os.path.join(new, rel), os.path.join(base, rel)
    st_new = os.lstat(path_new)
    try:
        st_base = os.lstat(path_base)
    except FileNotFoundError:
        changed.add(rel)
        continue
    if signature(st_new, path_new) != signature(st_base, path_base):
        changed.add(rel)

# Parents of every changed entry go in too (as docker does), so the layer is self-contained.
with_parents = set(changed)
for rel in changed:
    parent = os.path.dirname(rel)
    while parent and parent not in with_parents:
        with_parents.add(parent)
        parent = os.path.dirname(parent)

deleted = []
gone = set()
for rel in sorted(walk(base)):
    if rel in new_paths:
        continue
    gone.add(rel)
    parent = os.path.dirname(rel)
    if parent not in gone:  # only the topmost deleted path needs a whiteout
        deleted.append(rel)

ordered = sorted(with_parents, key=lambda p: p.split("/"))
with open(list_path, "wb") as f:
    for rel in ordered:
        f.write(b"./" + os.fsencode(rel) + b"\0")
with open(wh_path, "w") as f:
    for rel in deleted:
        f.write(rel + "\n")
size = sum(os.lstat(os.path.join(new, r)).st_size for r in changed if stat.S_ISREG(os.lstat(os.path.join(new, r)).st_mode))
print(f"layerdiff: {len(changed)} new or changed entries ({size / 2**20:.1f} MiB of file data), "
      f"{len(with_parents) - len(changed)} parent directories added, {len(deleted)} deletions")
