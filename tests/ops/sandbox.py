"""Exec a command inside a stand-in for a systemd unit's sandbox (root only).

    python sandbox.py SPEC_JSON -- ARGV...

``systemd-analyze verify`` only checks that a unit parses.  Whether the
daemons still *work* under the restrictions a unit declares needs those
restrictions applied, and there is no systemd (PID 1) in CI.  This wrapper
applies them the way systemd's exec step does, with the same kernel
mechanisms, then execs the command (same pid, so the test signals the daemon
itself):

* ``ProtectSystem=strict``, ``PrivateTmp=yes``, ``ReadWritePaths=``,
  ``ReadOnlyPaths=``: a private mount namespace built as
  ``src/core/namespace.c`` does: entries sorted by path, prefixes first; on
  the same path the more restrictive mode wins (read-only over read-write); a
  path that is not yet a mount point is bind-mounted onto itself (so every
  ``ReadWritePaths=`` entry is its own mount, and ``rename()`` between two of
  them fails with EXDEV exactly as under systemd); then each is remounted
  read-only or read-write, recursively.
* ``NoNewPrivileges=yes``: ``prctl(PR_SET_NO_NEW_PRIVS)``.
* ``MemoryDenyWriteExecute=yes``: ``prctl(PR_SET_MDWE, REFUSE_EXEC_GAIN)``,
  what systemd uses since v257 (older versions install an equivalent
  seccomp filter).
* ``SystemCallFilter=``, ``SystemCallErrorNumber=``,
  ``RestrictAddressFamilies=``, ``RestrictNamespaces=yes``: seccomp filters
  built with libseccomp (systemd's own library), from the syscall sets
  ``systemd-analyze syscall-filter`` prints.
* ``PrivateNetwork=yes``: a new network namespace.  ``UMask=``: umask.

Not emulated: ``User=``/``Group=`` (the tests run as root, which the
read-only mounts stop all the same), ``ProtectHome=`` (the test interpreter
may live under /root), ``PrivateDevices=``, ``ProtectKernel*=``,
``ProtectControlGroups=``, ``ProtectClock=``, ``LockPersonality=``,
``RestrictRealtime=``, ``RestrictSUIDSGID=``.

Only the standard library: it runs before anything else is imported.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import json
import os
import sys
from typing import Any

CLONE_NEWNS = 0x00020000
CLONE_NEWNET = 0x40000000
NAMESPACE_FLAGS = (0x00020000 | 0x02000000 | 0x04000000 | 0x08000000 | 0x10000000
                   | 0x20000000 | 0x40000000 | 0x00000080)  # NS CGROUP UTS IPC USER PID NET TIME
MS_RDONLY, MS_NOSUID, MS_NODEV, MS_NOEXEC = 1, 2, 4, 8
MS_REMOUNT, MS_NOATIME, MS_NODIRATIME, MS_BIND = 32, 1024, 2048, 4096
MS_REC, MS_PRIVATE, MS_RELATIME, MS_STRICTATIME = 16384, 1 << 18, 1 << 21, 1 << 24
PER_MOUNT_FLAGS = {"nosuid": MS_NOSUID, "nodev": MS_NODEV, "noexec": MS_NOEXEC,
                   "noatime": MS_NOATIME, "nodiratime": MS_NODIRATIME,
                   "relatime": MS_RELATIME, "strictatime": MS_STRICTATIME}
PR_SET_NO_NEW_PRIVS, PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 38, 65, 1
SCMP_ACT_ALLOW = 0x7FFF0000
SCMP_ACT_KILL_PROCESS = 0x80000000
SCMP_CMP_EQ, SCMP_CMP_GE, SCMP_CMP_MASKED_EQ = 4, 5, 7
AF_MAX = 46  # Linux 6.x

# Mount modes, in systemd's priority order (lower wins on an equal path).
READ_ONLY, READ_WRITE, PRIVATE_TMP = 0, 1, 2

libc = ctypes.CDLL(None, use_errno=True)


def _check(result: int, what: str) -> int:
    if result < 0:
        err = ctypes.get_errno()
        raise OSError(err, f"{what}: {os.strerror(err)}")
    return result


def _mount(source: str | None, target: str, fstype: str | None, flags: int) -> None:
    _check(libc.mount(source.encode() if source else None, target.encode(),
                      fstype.encode() if fstype else None, ctypes.c_ulong(flags), None),
           f"mount {source} {target}")


# -- mounts -----------------------------------------------------------------------------------


def _mounts() -> list[tuple[str, int]]:
    """(mount point, per-mount flags) of every mount, from /proc/self/mountinfo."""
    found = []
    with open("/proc/self/mountinfo", encoding="utf-8") as fh:
        for line in fh:
            fields = line.split()
            point = fields[4].encode().decode("unicode_escape")  # \040 and friends
            options = fields[5].split(",")
            flags = MS_RDONLY if "ro" in options else 0
            for name in options:
                flags |= PER_MOUNT_FLAGS.get(name, 0)
            found.append((point, flags))
    return found


def _under(path: str, prefix: str) -> bool:
    return prefix in ("/", path) or path.startswith(prefix.rstrip("/") + "/")


def _remount_recursive(prefix: str, read_only: bool, skip: list[str]) -> None:
    """Set or clear MS_RDONLY on ``prefix`` and every mount below it but ``skip``."""
    for point, flags in _mounts():
        if not _under(point, prefix) or any(_under(point, s) for s in skip):
            continue
        wanted = (flags | MS_RDONLY) if read_only else (flags & ~MS_RDONLY)
        if wanted != flags:
            _mount(None, point, None, MS_REMOUNT | MS_BIND | wanted)


def _place(target: str, source: str) -> None:
    """Make ``source`` appear at ``target`` (the installed layout), e.g. the spool root."""
    if not os.path.isdir(target):
        anchor = os.path.dirname(target)
        while not os.path.isdir(anchor):
            anchor = os.path.dirname(anchor)
        if anchor == "/":
            raise OSError(errno.ENOENT, f"cannot place {target}: no parent to cover")
        _mount("tmpfs", anchor, "tmpfs", MS_NOSUID | MS_NODEV)
        os.makedirs(target)
    _mount(source, target, None, MS_BIND | MS_REC)


def _entries(spec: dict[str, Any]) -> list[tuple[str, int, str | None]]:
    """The namespace's mount entries: sorted, and one per path (the first one wins)."""
    entries: list[tuple[str, int, str | None]] = []
    if spec.get("protect_system_strict"):
        entries.append(("/", READ_ONLY, None))
    for mode, key in ((READ_WRITE, "read_write_paths"), (READ_ONLY, "read_only_paths")):
        for path in spec.get(key, []):
            # "-/path": ignored when it does not exist, as systemd does.
            if not (path.startswith("-") and not os.path.exists(path[1:])):
                entries.append((path.lstrip("-"), mode, None))
    for path, source in spec.get("private_tmp", {}).items():
        entries.append((path, PRIVATE_TMP, source))
    # Sorted by path (a prefix before what is below it), then by mode; first one wins.
    entries.sort(key=lambda e: (e[0].rstrip("/").split("/"), e[1]))
    kept: list[tuple[str, int, str | None]] = []
    for entry in entries:
        if not kept or kept[-1][0] != entry[0]:
            kept.append(entry)
    return kept


def apply_mounts(spec: dict[str, Any]) -> None:
    _check(libc.unshare(CLONE_NEWNS), "unshare(CLONE_NEWNS)")
    _mount(None, "/", None, MS_REC | MS_PRIVATE)  # nothing we do reaches the host
    for target, source in spec.get("place", {}).items():
        _place(target, source)
    kept = _entries(spec)
    points = {p for p, _ in _mounts()}
    private = {path: source for path, mode, source in kept if source is not None}
    # A private tmp source may sit below another private tmp target (both under /tmp):
    # bind the one whose target covers a source last.
    for path in sorted(private, key=lambda t: any(_under(s, t) for s in private.values())):
        _mount(private[path], path, None, MS_BIND | MS_REC)
    for path, mode, _ in kept:
        if mode != PRIVATE_TMP and path not in points:
            _mount(path, path, None, MS_BIND | MS_REC)  # make it a mount point of its own
    # Remount in order, a prefix before what is below it, so the more specific entry
    # has the last word.  ProtectSystem=strict leaves the API file systems writable,
    # and PrivateTmp's mounts are writable.
    keep_writable = [*private, *(["/proc", "/sys", "/dev"] if spec.get("protect_system_strict")
                                 else [])]
    for path, mode, _ in kept:
        if mode != PRIVATE_TMP:
            skip = [k for k in keep_writable if k != path and _under(k, path)]
            _remount_recursive(path, mode == READ_ONLY, skip)


# -- seccomp ----------------------------------------------------------------------------------


class _ArgCmp(ctypes.Structure):
    _fields_ = [("arg", ctypes.c_uint), ("op", ctypes.c_int),
                ("datum_a", ctypes.c_uint64), ("datum_b", ctypes.c_uint64)]


class _Filter:
    def __init__(self, default_action: int) -> None:
        name = ctypes.util.find_library("seccomp") or "libseccomp.so.2"
        self.lib = ctypes.CDLL(name, use_errno=True)
        self.lib.seccomp_init.restype = ctypes.c_void_p
        self.lib.seccomp_init.argtypes = [ctypes.c_uint32]
        self.lib.seccomp_syscall_resolve_name.argtypes = [ctypes.c_char_p]
        self.lib.seccomp_rule_add_array.argtypes = [
            ctypes.c_void_p, ctypes.c_uint32, ctypes.c_int, ctypes.c_uint,
            ctypes.POINTER(_ArgCmp)]
        self.lib.seccomp_load.argtypes = [ctypes.c_void_p]
        self.ctx = self.lib.seccomp_init(default_action)
        if not self.ctx:
            raise OSError("seccomp_init failed")

    def rule(self, action: int, syscall: str, *cmps: tuple[int, int, int, int]) -> None:
        nr = self.lib.seccomp_syscall_resolve_name(syscall.encode())
        if nr == -1:  # __NR_SCMP_ERROR: not a syscall on this architecture
            return
        array = (_ArgCmp * len(cmps))(*[_ArgCmp(*c) for c in cmps]) if cmps else None
        # Like systemd, a rule libseccomp cannot express here is skipped, not fatal.
        self.lib.seccomp_rule_add_array(self.ctx, action, nr, len(cmps), array)

    def load(self) -> None:
        rc = self.lib.seccomp_load(self.ctx)
        if rc < 0:
            raise OSError(-rc, f"seccomp_load: {os.strerror(-rc)}")


def _errno_action(number: int) -> int:
    return 0x00050000 | (number & 0xFFFF)


def apply_seccomp(spec: dict[str, Any]) -> None:
    """The filters, the syscall allow-list last (it may forbid loading more), as systemd does."""
    families = spec.get("address_families")
    if families is not None:
        f = _Filter(SCMP_ACT_ALLOW)
        refuse = _errno_action(errno.EAFNOSUPPORT)
        for family in range(AF_MAX):
            if family not in families:
                f.rule(refuse, "socket", (0, SCMP_CMP_EQ, family, 0))
        f.rule(refuse, "socket", (0, SCMP_CMP_GE, AF_MAX, 0))
        f.load()
    if spec.get("restrict_namespaces"):
        f = _Filter(SCMP_ACT_ALLOW)
        eperm = _errno_action(errno.EPERM)
        for flag in _bits(NAMESPACE_FLAGS):
            f.rule(eperm, "unshare", (0, SCMP_CMP_MASKED_EQ, flag, flag))
            f.rule(eperm, "clone", (0, SCMP_CMP_MASKED_EQ, flag, flag))
        f.rule(eperm, "setns")
        f.rule(_errno_action(errno.ENOSYS), "clone3")  # flags live in a struct: refuse it all
        f.load()
    allowed = spec.get("syscall_allow")
    if allowed is not None:
        err = spec.get("syscall_errno")
        f = _Filter(SCMP_ACT_KILL_PROCESS if err is None else _errno_action(err))
        for name in allowed:
            f.rule(SCMP_ACT_ALLOW, name)
        f.load()


def _bits(mask: int) -> list[int]:
    return [1 << i for i in range(64) if mask & (1 << i)]


# -- main -------------------------------------------------------------------------------------


def main(argv: list[str]) -> None:
    spec: dict[str, Any] = json.loads(argv[1])
    if argv[2] != "--":
        raise SystemExit("usage: sandbox.py SPEC_JSON -- ARGV...")
    command = argv[3:]
    apply_mounts(spec)
    if spec.get("private_network"):
        _check(libc.unshare(CLONE_NEWNET), "unshare(CLONE_NEWNET)")
    if "umask" in spec:
        os.umask(spec["umask"])
    if spec.get("no_new_privileges"):
        _check(libc.prctl(PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0), "PR_SET_NO_NEW_PRIVS")
    if spec.get("memory_deny_write_execute"):
        _check(libc.prctl(PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN, 0, 0, 0), "PR_SET_MDWE")
    env = dict(os.environ)
    if "WATCHDOG_USEC" in env:
        env["WATCHDOG_PID"] = str(os.getpid())  # exec keeps the pid, as systemd's does
    apply_seccomp(spec)
    os.execve(command[0], command, env)


if __name__ == "__main__":
    main(sys.argv)
