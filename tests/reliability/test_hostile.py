"""A hostile corpus dropped on the real daemon: every entry is quarantined with its reason
or processed as the job it is, the daemon stays up, and nothing outside the spool is
read or written.

"Not read" is checked three ways: a secret job file outside the spool, reachable
by a symlink, never runs and its token never appears in the spool or the log;
two FIFOs (one behind a symlink) each have a writer blocked in ``open()``,
which returns the moment anything opens the FIFO for reading, and they are
still blocked at the end; and the bytes and mtimes of everything outside are
unchanged.
"""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import orjson
import pytest
from relkit import (
    NO_DAC,
    Daemon,
    drop,
    quarantined,
    record,
    wait_for,
    wait_quarantined,
    wait_record,
)
from spoolkit import nest_dirs  # (on the path relkit makes)

StartDaemon = Callable[..., Daemon]
MAX_JOB_BYTES = 1_048_576  # the default
SECRET = "TOP-SECRET-7f3a9c"
BOM = b"\xef\xbb\xbf"
ECHO = b'{"tool": "echo", "params": {"message": "hello"}}'


def _nested(depth: int, inner: bytes = b"1") -> bytes:
    return b'{"tool": "echo", "params": {"message": ' + b"[" * depth + inner + \
        b"]" * depth + b"}}"


# name -> (bytes, words the quarantine message must contain)
BAD_FILES: dict[str, tuple[bytes, str]] = {
    "malformed.json": (b'{"tool": "echo",', "malformed JSON"),
    "empty.json": (b"", "empty file"),
    "blank.json": (b"  \n\t ", "empty file"),
    "huge.json": (b'{"tool": "echo", "params": {"message": "' + b"x" * (MAX_JOB_BYTES + 10)
                  + b'"}}', "too large"),
    "deep.json": (b"[" * 100_000 + b"]" * 100_000, "malformed JSON"),
    "deep-params.json": (_nested(100_000), "malformed JSON"),
    "latin1.json": (b'{"tool": "echo", "params": {"message": "caf\xe9"}}', "not UTF-8"),
    "utf16.json": ('{"tool": "echo"}'.encode("utf-16"), "not UTF-8"),
    "nan.json": (b'{"tool": "echo", "params": {"message": NaN}}', "malformed JSON"),
    "infinity.json": (b'{"tool": "echo", "params": {"message": -Infinity}}', "malformed JSON"),
    "surrogate.json": (b'{"tool": "echo", "params": {"message": "\\ud800"}}', "malformed JSON"),
    "trailing.json": (ECHO + b" {}", "malformed JSON"),
    "array.json": (b'[{"tool": "echo"}]', "JSON object, not list"),
    "null.json": (b"null", "JSON object, not NoneType"),
    "string.json": (b'"echo"', "JSON object, not str"),
    "number.json": (b"42", "JSON object, not int"),
    "no-tool.json": (b'{"params": {}}', "tool: Field required"),
    "tool-int.json": (b'{"tool": 5}', "tool: Input should be a valid string"),
    "tool-empty.json": (b'{"tool": ""}', "tool: String should have at least 1 character"),
    "params-list.json": (b'{"tool": "echo", "params": [1, 2]}', "params: Input should be"),
    "priority-str.json": (b'{"tool": "echo", "priority": "high"}', "priority:"),
    "attempts-huge.json": (b'{"tool": "echo", "max_attempts": 1e308}', "max_attempts:"),
    # Its run, attempt 2**64, could not be logged nor recorded (orjson writes 64 bits):
    # the processor crashed, and again at each restart on the file left in running/.
    "attempts-u64.json": (b'{"tool": "echo", "attempts": 18446744073709551615}', "attempts:"),
    "timeout-neg.json": (b'{"tool": "echo", "timeout": -1}', "timeout:"),
    "not-before.json": (b'{"tool": "echo", "not_before": "yesterday"}', "not_before:"),
    "naive-time.json": (b'{"tool": "echo", "not_before": "2030-01-01T00:00:00"}',
                        "needs a UTC offset"),
    "extra-field.json": (b'{"tool": "echo", "exec": "rm -rf /"}', "exec: Extra inputs"),
    "id-mismatch.json": (b'{"tool": "echo", "id": "someone-else"}', "id mismatch"),
    "bad-id-field.json": (b'{"tool": "echo", "id": "../x"}', "id: String should match"),
}
BAD_NAMES: list[str | bytes] = [
    "jöb.json", "a\nb.json", "-rf.json", "--help.json", " space.json", "x.JSON",
    "no-suffix", "a" * 200 + ".json", "dots..json.exe", "日本.json", b"\xff\xfe.json",
]
# valid jobs, processed: name -> (bytes, expected state, expected error type or result)
VALID: dict[str, tuple[bytes, str, object]] = {
    "bom.json": (BOM + ECHO, "done", {"message": "hello"}),
    "dup-keys.json": (b'{"tool": "nope", "tool": "echo", "params": {"message": "first"}, '
                      b'"params": {"message": "last"}}', "done", {"message": "last"}),
    "deep-ok.json": (_nested(100), "done", {"message": orjson.loads(_nested(100))
                                            ["params"]["message"]}),
    "unicode.json": ('{"tool": "echo", "params": {"message": "日本 \\u0000 😀"}}'.encode(),
                     "done", {"message": "日本 \x00 😀"}),
    "unknown-tool.json": (b'{"tool": "os.system", "params": {"command": "id"}}', "failed",
                          "unknown_tool"),
    "bad-params.json": (b'{"tool": "echo", "params": {"nope": 1}}', "failed",
                        "invalid_params"),
}
IGNORED = [".hidden.json", "upload.json.part", "upload.json.tmp", "upload.json~"]


@dataclass
class Outside:
    root: Path
    secret: Path
    fifo: Path
    folder: Path
    linked: Path

    def snapshot(self) -> dict[str, tuple[int, int, bytes]]:
        found = {}
        for path in sorted(self.root.rglob("*")):
            st = path.lstat()
            data = path.read_bytes() if stat.S_ISREG(st.st_mode) else b""
            found[str(path.relative_to(self.root))] = (st.st_mode, st.st_mtime_ns, data)
        return found


class BlockedWriter:
    """A thread blocked in ``open(fifo, O_WRONLY)`` until someone opens it for reading."""

    def __init__(self, fifo: Path) -> None:
        self.fifo = fifo
        self.opened = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        fd = os.open(self.fifo, os.O_WRONLY)  # blocks while no reader exists
        self.opened.set()
        os.close(fd)

    def release(self, where: Path) -> None:
        """Open ``where`` (the FIFO, maybe renamed) for reading so the writer can finish."""
        fd = os.open(where, os.O_RDONLY | os.O_NONBLOCK)
        try:
            self._thread.join(10)
        finally:
            os.close(fd)


@pytest.fixture
def outside(tmp_path: Path) -> Outside:
    root = tmp_path / "outside"
    root.mkdir()
    secret = root / "secret.json"
    secret.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": SECRET}}))
    fifo = root / "fifo"
    os.mkfifo(fifo)
    folder = root / "folder"
    folder.mkdir()
    (folder / "inner.json").write_bytes(ECHO)
    linked = root / "linked.json"
    linked.write_bytes(orjson.dumps({"tool": "echo", "params": {"message": SECRET + "-2"}}))
    return Outside(root, secret, fifo, folder, linked)


@pytest.fixture
def writers(outside: Outside, spool_root: Path) -> Iterator[dict[str, BlockedWriter]]:
    inner = spool_root / "pending" / "fifo.json"
    os.mkfifo(inner)
    found = {"outside": BlockedWriter(outside.fifo), "inside": BlockedWriter(inner)}
    yield found
    found["outside"].release(outside.fifo)
    found["inside"].release(spool_root / "failed" / "fifo.orig")


def _plant_special(pending: Path, spool_root: Path, outside: Outside) -> dict[str, str]:
    """Symlinks, a hard link, a socket, a directory, a device: name -> expected words."""
    (spool_root / "tmp" / "inside-target").write_bytes(ECHO)
    links = {"inlink.json": "../tmp/inside-target", "outlink.json": str(outside.secret),
             "outfifo.json": str(outside.fifo), "outdir.json": str(outside.folder),
             "zero.json": "/dev/zero", "dangling.json": str(outside.root / "nothing")}
    expected = {name: "symlink" for name in links}
    for name, target in links.items():
        os.symlink(target, pending / name)
    os.link(outside.linked, pending / "hardlink.json")
    expected["hardlink.json"] = "hard link"
    expected["fifo.json"] = "not a regular file: fifo"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(pending / "sock.json"))
    expected["sock.json"] = "not a regular file: socket"
    (pending / "dir.json").mkdir()
    (pending / "dir.json" / "inside.json").write_bytes(ECHO)
    expected["dir.json"] = "not a regular file: directory"
    try:
        os.mknod(pending / "chardev.json", stat.S_IFCHR | 0o600, os.makedev(1, 5))
        expected["chardev.json"] = "not a regular file: character device"
    except PermissionError:
        pass  # no mknod in this sandbox
    with open(pending / "sparse.json", "wb") as fh:
        fh.truncate(8 << 30)  # 8 GiB of nothing: must be judged by its size, never read
    expected["sparse.json"] = "too large"
    return expected


def _drop_corpus(pending: Path) -> None:
    for name, (data, _) in BAD_FILES.items():
        (pending / name).write_bytes(data)
    for raw in BAD_NAMES:
        path = os.path.join(os.fsencode(pending), os.fsencode(raw))
        with open(path, "wb") as fh:
            fh.write(ECHO)
    for name, (data, _, _) in VALID.items():
        (pending / name).write_bytes(data)
    for name in IGNORED:
        (pending / name).write_bytes(ECHO)


def _name_of(raw: str | bytes) -> str:
    name = os.fsdecode(raw) if isinstance(raw, bytes) else raw
    return name.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def test_the_hostile_corpus(spool_root: Path, daemon: StartDaemon, outside: Outside,
                            writers: dict[str, BlockedWriter]) -> None:
    pending = spool_root / "pending"
    special = _plant_special(pending, spool_root, outside)
    before = outside.snapshot()
    _drop_corpus(pending)
    d = daemon(SPOOL_MAX_JOB_BYTES=str(MAX_JOB_BYTES))
    wait_for(lambda: sorted(os.listdir(pending)) == sorted(IGNORED), 30,
             "pending/ to hold only the in-progress names")
    drop(spool_root, "canary", {"tool": "echo", "params": {"message": "still up"}})
    assert wait_record(spool_root, "canary", 30)["result"] == {"message": "still up"}
    assert d.running()

    found = quarantined(spool_root)
    expected = {name: words for name, (_, words) in BAD_FILES.items()} | special
    expected |= {_name_of(raw): "bad file name" for raw in BAD_NAMES}
    for name, words in expected.items():
        rec = found.pop(name, None)
        assert rec is not None, f"{name!r} was not quarantined"
        assert rec["state"] == "failed" and rec["error"]["type"] == "invalid_job", rec
        assert words in rec["error"]["message"], (name, rec["error"]["message"])
        _check_original(spool_root, name, rec)
    assert found == {}, f"quarantined but not in the corpus: {list(found)}"
    for name, (_, state, want) in VALID.items():
        rec = wait_record(spool_root, name.removesuffix(".json"))
        assert rec["state"] == state, (name, rec)
        assert (rec["result"] if state == "done" else rec["error"]["type"]) == want, name
        if state == "failed":  # an unknown tool, invalid params: the file's bytes kept
            kept = spool_root / "failed" / f"{rec['id']}.orig"
            assert kept.read_bytes() == VALID[name][0], name
    for name in IGNORED:
        assert (pending / name).read_bytes() == ECHO, "in-progress names are left alone"

    assert outside.snapshot() == before, "nothing outside the spool was written"
    assert not writers["outside"].opened.is_set(), "the FIFO behind a symlink was opened"
    assert not writers["inside"].opened.is_set(), "the FIFO in pending/ was opened"
    _assert_secret_never_read(spool_root, d)
    assert d.stop() == 0


def _check_original(spool_root: Path, name: str, rec: dict[str, object]) -> None:
    orig = spool_root / "failed" / f"{rec['id']}.orig"
    st = orig.lstat()
    if name in BAD_FILES:
        assert orig.read_bytes() == BAD_FILES[name][0], f"{name}: original bytes kept"
        assert rec["source"] == {"name": name, "size": len(BAD_FILES[name][0]), "kind": "file"}
    elif (name.endswith("link.json") and name != "hardlink.json") or name in (
            "outfifo.json", "outdir.json", "zero.json", "dangling.json"):
        assert stat.S_ISLNK(st.st_mode), f"{name}: the symlink itself, renamed"
    elif name == "hardlink.json":
        assert st.st_nlink == 2, "renamed, never copied: still the outside file's inode"
    elif name == "fifo.json":
        assert stat.S_ISFIFO(st.st_mode)
    elif name == "sock.json":
        assert stat.S_ISSOCK(st.st_mode)
    elif name == "dir.json":
        assert (orig / "inside.json").read_bytes() == ECHO
    elif name == "sparse.json":
        assert st.st_size == 8 << 30
    elif name != "chardev.json":
        assert orig.read_bytes() == ECHO, f"{name!r}: original bytes kept"


def _assert_secret_never_read(spool_root: Path, d: Daemon) -> None:
    token = SECRET.encode()
    for path in spool_root.rglob("*"):
        st = path.lstat()
        if stat.S_ISREG(st.st_mode) and st.st_size < (1 << 20) and st.st_nlink == 1:
            assert token not in path.read_bytes(), f"the secret reached {path}"
    assert SECRET not in d.logs()


def test_a_job_nested_300_deep_is_quarantined_not_a_crash(spool_root: Path,
                                                          daemon: StartDaemon) -> None:
    d = daemon()
    (spool_root / "pending" / "deep300.json").write_bytes(_nested(300))
    wait_for(lambda: record(spool_root, "deep300") or not d.running(), 20,
             "a record of deep300, or the processor's exit")
    assert d.running(), "the processor crashed:\n" + d.logs()[-2000:]
    assert wait_record(spool_root, "deep300")["error"]["type"] == "invalid_job"


NOBODY = 65534


def _foreign_dir(path: Path) -> None:
    """A directory with a file in it, another user's (mode 0755): as a member of the
    submit group makes one with ``mkdir pending/foo.json``."""
    path.mkdir()
    (path / "notes.txt").write_text("a submitter's notes\n")
    for each in (path / "notes.txt", path):
        os.chown(each, NOBODY, NOBODY)


def test_a_directory_the_spool_user_may_not_move_is_kept_in_place_with_its_record(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A submitter's directory in pending/ (not the spool user's to write): a directory
    may change folder only if its mover may write it (its '..'), so quarantine's move to
    tmp/ failed with EACCES.  Before, the processor paused claims ("spool I/O trouble")
    and retried after each pause, so no other job ever ran.  Now it is renamed within
    pending/ to a name intake ignores, beside a record saying where it is and that an
    operator must remove it; the daemon goes on, and a new drop of the name runs.  A
    processor without CAP_DAC_OVERRIDE stands for the spool user."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root (to make another user's directory) and setpriv")
    pending = spool_root / "pending"
    for name in ("foo.json", "bad name"):
        _foreign_dir(pending / name)
    d = daemon(prefix=NO_DAC)
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "still up"}})
    assert wait_record(spool_root, "after")["result"] == {"message": "still up"}
    found = wait_quarantined(spool_root, ["foo.json", "bad name"])
    for name, rec in found.items():
        assert rec["error"]["type"] == "invalid_job" and rec["source"]["kind"] == "directory"
        assert "operator" in rec["error"]["message"], rec
        kept = spool_root / rec["source"]["kept_at"]
        # An id of its own, which its kept name ends with: a later run of foo replaces
        # failed/foo.json, and the kept directory would be left with no record.
        assert kept.parent == pending and kept.name.startswith("."), rec
        assert rec["id"].startswith("invalid-") and kept.name.endswith(rec["id"]), rec
        assert (kept / "notes.txt").read_text() == "a submitter's notes\n"
        assert not (pending / name).exists()
    (pending / "foo.json").write_bytes(ECHO)  # the name is free again
    assert wait_for(lambda: (r := record(spool_root, "foo")) and r["state"] == "done" and r,
                    20, "foo's new run")["result"] == {"message": "hello"}
    assert "I/O trouble" not in d.logs()
    assert d.stop() == 0
    d = daemon(prefix=NO_DAC)  # a restart leaves what is kept alone
    drop(spool_root, "later", {"tool": "echo", "params": {"message": 2}})
    assert wait_record(spool_root, "later")["state"] == "done"
    assert quarantined(spool_root) == found
    assert "I/O trouble" not in d.logs()
    assert d.stop() == 0


def test_a_quarantined_directory_the_spool_user_may_not_remove_is_kept_when_superseded(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A submitter's directory the spool user may move (mode 0777) but not remove whole
    (a subdirectory of theirs, 0755, holds a file) is quarantined as failed/foo.orig; a
    later run of foo supersedes it, and its completion removes it.  Before, that removal
    failed with EACCES and the finish was retried after every I/O pause: claims paused
    for good.  Now it is renamed within failed/ beside a record saying an operator must
    remove it, and the daemon goes on."""
    if shutil.which("setpriv") is None or os.geteuid() != 0:
        pytest.skip("needs root (to make another user's directory) and setpriv")
    top = spool_root / "pending" / "foo.json"
    _foreign_dir(top)
    _foreign_dir(top / "sub")
    top.chmod(0o777)
    d = daemon(prefix=NO_DAC)
    assert wait_record(spool_root, "foo")["error"]["type"] == "invalid_job"
    assert (spool_root / "failed" / "foo.orig").is_dir()
    (spool_root / "pending" / "foo.json").write_bytes(ECHO)
    assert wait_for(lambda: (r := record(spool_root, "foo")) and r["state"] == "done" and r,
                    20, "foo's new run")["result"] == {"message": "hello"}
    rec = wait_quarantined(spool_root, ["failed/foo.orig"])["failed/foo.orig"]
    assert "operator" in rec["error"]["message"], rec
    kept = spool_root / rec["source"]["kept_at"]
    assert kept.parent.name == "failed" and kept.name.endswith(rec["id"]), rec
    assert (kept / "sub" / "notes.txt").read_text() == "a submitter's notes\n"
    assert not (spool_root / "failed" / "foo.orig").exists()
    drop(spool_root, "after", {"tool": "echo", "params": {"message": "still up"}})
    assert wait_record(spool_root, "after")["state"] == "done"
    assert "I/O trouble" not in d.logs()
    assert d.stop() == 0


def test_a_directory_nested_past_the_recursion_limit_is_superseded_not_a_crash(
        spool_root: Path, daemon: StartDaemon) -> None:
    """A drop that is a directory nested deeper than the recursion limit is quarantined,
    and a later run of its id supersedes it: the directory goes with the old record.
    That removal (shutil.rmtree) raised RecursionError: the processor crashed, and again
    at each start, as recovery removed it; every job after it waited for good."""
    staged = spool_root / "tmp" / "deep"
    nest_dirs(staged, sys.getrecursionlimit() + 500)
    try:
        os.rename(staged, spool_root / "pending" / "deep.json")
        d = daemon()
        rec = wait_record(spool_root, "deep")
        assert rec["error"]["message"] == "not a regular file: directory", rec
        assert (spool_root / "failed" / "deep.orig").is_dir()
        drop(spool_root, "deep", {"tool": "echo", "params": {"message": "again"}})
        assert wait_for(lambda: (r := record(spool_root, "deep")) and r["state"] == "done"
                        and r, 20, "deep's new run")["result"] == {"message": "again"}
        assert wait_for(lambda: not os.path.lexists(spool_root / "failed" / "deep.orig"),
                        20, "the superseded directory's removal")
        drop(spool_root, "after", {"tool": "echo", "params": {"message": "still up"}})
        assert wait_record(spool_root, "after")["state"] == "done"
        assert "crashed" not in d.logs()
        assert d.stop() == 0
    finally:  # pytest's own cleanup of tmp_path is shutil.rmtree too
        for left in (staged, spool_root / "pending" / "deep.json",
                     spool_root / "failed" / "deep.orig"):
            subprocess.run(["rm", "-rf", "--", str(left)], check=True)
