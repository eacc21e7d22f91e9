"""Exec a program under a seccomp filter like systemd's SystemCallFilter (test helper).

    python seccomp_exec.py ALLOWED_SYSCALLS_FILE -- PROGRAM ARGS...

Every system call not named in the file fails with EPERM, as with the unit's
SystemCallErrorNumber=EPERM; libseccomp does the work (through ctypes: the Python
binding is not on PyPI).
"""

from __future__ import annotations

import ctypes
import os
import sys
from pathlib import Path

SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_ERRNO = 0x00050000  # | errno


def main() -> None:
    names = Path(sys.argv[1]).read_text().split()
    argv = sys.argv[sys.argv.index("--") + 1:]
    lib = ctypes.CDLL("libseccomp.so.2", use_errno=True)
    lib.seccomp_init.restype = ctypes.c_void_p
    lib.seccomp_init.argtypes = [ctypes.c_uint32]
    lib.seccomp_rule_add.argtypes = [ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int,
                                     ctypes.c_uint]
    lib.seccomp_load.argtypes = [ctypes.c_void_p]
    lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
    ctx = lib.seccomp_init(SCMP_ACT_ERRNO | 1)  # EPERM
    for name in names:
        nr = lib.seccomp_syscall_resolve_name(name.encode())
        if nr >= 0:  # a name this architecture does not have
            lib.seccomp_rule_add(ctx, SCMP_ACT_ALLOW, nr, 0)
    if lib.seccomp_load(ctx) != 0:
        raise SystemExit("seccomp_load failed")
    os.execvp(argv[0], argv)


if __name__ == "__main__":
    main()
