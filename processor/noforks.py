"""Forbid this process to start processes, for good: the processor's last step.

Python threads cannot be killed, so a FAST tool's thread (one it left, or a run the
grace period cut short) runs on until the processor exits, and may start processes all
along.  A kill of what is below the processor therefore leaves a window, between its
last walk and the exit, in which a new process is started and then outlives the
processor outside systemd (the CI run of stop 37 saw one, at load).  Once this
seccomp filter is in place no thread of the process can start one (fork, vfork, and
clone or clone3 without ``CLONE_THREAD``: new threads are still allowed), so one kill
after it leaves nothing behind.

The filter applies to every thread (``SECCOMP_FILTER_FLAG_TSYNC``) and cannot be lifted;
it needs ``no_new_privs``, which is set first and harmless at exit.  A process creation
it refuses fails ``EPERM`` (``PermissionError`` in Python).  ``clone3`` gets
``ENOSYS``, as under Docker's default profile: a filter cannot read its flags, and the
C library then makes new threads with ``clone``.  Only on x86-64 and AArch64; elsewhere,
or where the kernel refuses the filter, :func:`forbid_new_processes` returns False and
the kill is as good as its timing.
"""

from __future__ import annotations

import ctypes
import errno
import platform
import struct
from typing import NamedTuple

PR_SET_NO_NEW_PRIVS = 38
SECCOMP_SET_MODE_FILTER = 1
SECCOMP_FILTER_FLAG_TSYNC = 1
SECCOMP_RET_ALLOW = 0x7FFF0000
SECCOMP_RET_ERRNO = 0x00050000
CLONE_THREAD = 0x00010000

# Classic BPF op codes (linux/filter.h).
_LD_ABS_W = 0x20  # BPF_LD | BPF_W | BPF_ABS
_JEQ_K = 0x15  # BPF_JMP | BPF_JEQ | BPF_K
_JSET_K = 0x45  # BPF_JMP | BPF_JSET | BPF_K
_RET_K = 0x06  # BPF_RET | BPF_K

# Offsets in struct seccomp_data: nr, arch, then the instruction pointer and args[6];
# the low half of args[0] (clone's flags) on these little-endian machines.
_NR, _ARCH, _ARG0_LOW = 0, 4, 16


class Arch(NamedTuple):
    """What the filter needs of a machine: its audit number and its syscall numbers."""

    audit: int
    seccomp: int
    clone: int
    clone3: int
    forks: tuple[int, ...]  # fork and vfork, where the machine has them


ARCHES = {
    "x86_64": Arch(audit=0xC000003E, seccomp=317, clone=56, clone3=435, forks=(57, 58)),
    "aarch64": Arch(audit=0xC00000B7, seccomp=277, clone=220, clone3=435, forks=()),
}


def program(arch: Arch) -> list[tuple[int, int, int, int]]:
    """The filter's instructions, as (code, jump if true, jump if false, k); a jump
    counts the instructions it skips."""
    refuse = SECCOMP_RET_ERRNO | errno.EPERM
    verdicts = {  # what each syscall gets, placed after the checks and the "allow"
        # clone: a new thread is allowed, a new process is not.
        arch.clone: [(_LD_ABS_W, 0, 0, _ARG0_LOW), (_JSET_K, 0, 1, CLONE_THREAD),
                     (_RET_K, 0, 0, SECCOMP_RET_ALLOW), (_RET_K, 0, 0, refuse)],
        arch.clone3: [(_RET_K, 0, 0, SECCOMP_RET_ERRNO | errno.ENOSYS)],
        **{nr: [(_RET_K, 0, 0, refuse)] for nr in arch.forks},
    }
    checks = len(verdicts)
    allow = 3 + checks  # the index of the "allow" after the checks
    code = [(_LD_ABS_W, 0, 0, _ARCH),
            (_JEQ_K, 0, allow - 2, arch.audit),  # another machine's syscalls: allowed
            (_LD_ABS_W, 0, 0, _NR)]
    at = allow + 1  # where the next verdict goes
    for nr, verdict in verdicts.items():
        code.append((_JEQ_K, at - len(code) - 1, 0, nr))
        at += len(verdict)
    code.append((_RET_K, 0, 0, SECCOMP_RET_ALLOW))
    for verdict in verdicts.values():
        code.extend(verdict)
    return code


def forbid_new_processes() -> bool:
    """Install the filter on every thread of this process; False where it could not be
    (an unknown machine, a kernel without seccomp, a refusal)."""
    arch = ARCHES.get(platform.machine())
    if arch is None:
        return False
    code = program(arch)
    filters = ctypes.create_string_buffer(
        b"".join(struct.pack("=HBBI", *insn) for insn in code))
    # struct sock_fprog: an unsigned short, then (aligned) the pointer to the filters.
    fprog = ctypes.create_string_buffer(
        struct.pack("@HP", len(code), ctypes.addressof(filters)))
    try:
        libc = ctypes.CDLL(None, use_errno=True)
    except OSError:
        return False
    if libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0:
        return False
    done = libc.syscall(arch.seccomp, SECCOMP_SET_MODE_FILTER, SECCOMP_FILTER_FLAG_TSYNC,
                        fprog)
    return bool(done == 0)
