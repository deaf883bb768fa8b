#!/usr/bin/env python3
"""Touch and free BYTES of anonymous memory (private, transparent huge pages
where the kernel allows), so that the next large allocation finds memory the
hypervisor has already backed.

    prewarm.py [--settle S] BYTES    prints {"bytes": ..., "seconds": ...}

Why: on VMs whose balloon device reports free pages to the host (virtio-balloon
free page reporting, as in Firecracker), freed guest memory is handed back to
the host within seconds, and the next first touch of it costs a host page
fault per page: here that can be 1-2 s per GB, a per-run lottery that
depends on what ran just before, larger than the I/O being measured. Every
method in bench/load.sh is prewarmed the same way just before it runs (and
the time is not counted), so all see memory as a bare-metal host would.
--no-prewarm in load.sh turns this off.

The kernel reports free pages in passes that start about 2 s after memory is
freed; a pass that runs while a load allocates hands it reported (slow)
pages again. So first wait --settle seconds (default 3) for pending passes
to finish, then touch, then free: the load that starts right after has about
2 s before the next pass. Importable: prewarm(nbytes, settle) -> seconds.
"""
import ctypes
import ctypes.util
import json
import mmap
import sys
import time

_libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
_libc.mmap.restype = ctypes.c_void_p
_libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int,
                       ctypes.c_int, ctypes.c_long]
_libc.munmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t]
_libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
MADV_HUGEPAGE = 14
PAGE = mmap.PAGESIZE


def prewarm(nbytes, settle=3.0):
    if settle > 0:
        time.sleep(settle)
    nbytes = (int(nbytes) + PAGE - 1) // PAGE * PAGE
    if nbytes <= 0:
        return 0.0
    addr = _libc.mmap(None, nbytes, mmap.PROT_READ | mmap.PROT_WRITE,
                      mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS, -1, 0)
    if addr in (None, ctypes.c_void_p(-1).value):
        raise OSError(ctypes.get_errno(), "mmap %d bytes" % nbytes)
    try:
        _libc.madvise(addr, nbytes, MADV_HUGEPAGE)  # advisory
        t0 = time.perf_counter()
        step = 1 << 20  # memset 1 MiB at a time: every page is written
        for off in range(0, nbytes, step):
            ctypes.memset(addr + off, 1, min(step, nbytes - off))
        return time.perf_counter() - t0
    finally:
        _libc.munmap(addr, nbytes)


def main(argv):
    settle = 3.0
    if len(argv) >= 2 and argv[0] == "--settle":
        settle = float(argv[1])
        argv = argv[2:]
    if len(argv) != 1:
        print(__doc__, file=sys.stderr)
        return 2
    n = int(float(argv[0]))
    sec = prewarm(n, settle)
    print(json.dumps({"bytes": n, "seconds": sec}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
