#!/usr/bin/env python3
"""Drop files from the page cache, and measure how much of them is resident.

    evict.py [--check] PATH...     (a directory means every file under it)

Each file is fdatasync'ed (dirty pages cannot be dropped) and then given
posix_fadvise(POSIX_FADV_DONTNEED). --check prints, as one JSON line, the
bytes still resident according to mincore(2) afterwards. Importable:
evict(paths), resident(paths) -> (resident_bytes, total_bytes).
"""
import ctypes
import ctypes.util
import json
import mmap
import os
import sys

PAGE = os.sysconf("SC_PAGE_SIZE")
_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]


def files_of(paths):
    for p in paths:
        if os.path.isdir(p):
            for root, _, names in os.walk(p):
                for n in sorted(names):
                    yield os.path.join(root, n)
        else:
            yield p


def evict(paths):
    for fn in files_of(paths):
        fd = os.open(fn, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def _resident_file(fn):
    size = os.path.getsize(fn)
    if size == 0:
        return 0, 0
    fd = os.open(fn, os.O_RDONLY)
    try:
        addr = _libc.mmap(None, size, mmap.PROT_READ, mmap.MAP_SHARED, fd, 0)
        if addr in (None, ctypes.c_void_p(-1).value):
            raise OSError(ctypes.get_errno(), "mmap " + fn)
        try:
            pages = (size + PAGE - 1) // PAGE
            vec = ctypes.create_string_buffer(pages)
            if _libc.mincore(addr, size, vec) != 0:
                raise OSError(ctypes.get_errno(), "mincore " + fn)
            n = sum(b & 1 for b in vec.raw)
        finally:
            _libc.munmap(addr, size)
    finally:
        os.close(fd)
    return min(n * PAGE, size), size


def resident(paths):
    r = t = 0
    for fn in files_of(paths):
        a, b = _resident_file(fn)
        r += a
        t += b
    return r, t


def main(argv):
    check = "--check" in argv
    paths = [a for a in argv if a != "--check"]
    if not paths:
        print(__doc__, file=sys.stderr)
        return 2
    evict(paths)
    if check:
        r, t = resident(paths)
        print(json.dumps({"resident_bytes": r, "total_bytes": t}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
