"""Two claimants and a drop made the documented way (``tmp/`` then a rename over
``pending/<id>.json``) between them: claimant A opened and locked the first drop, the
newer one replaced it, claimant B opened and locked the newer one, then A's move took
the newer one into ``running/``.  A found it held and left it there; B's move then found
nothing in ``pending/`` and B let go: the newer drop sat unleased in ``running/`` and the
next recovery scan failed it ``abandoned`` ("its processor died mid-run") under two live
processors (a review, with strace holding each claimant at its step).

Now A gives it back to ``pending/``: B's move lands it if it comes after, or the next
claim takes it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path

import pytest

import spool.claim as claim_module
from spool.claim import Claim, take
from spool.fsops import Mover, StrPath
from spool.layout import Layout
from spool.lease import OPEN_FLAGS, try_lock
from spool.orphans import lease
from spool.recovery import Recovery, RecoveryReport
from spool.settings import FsyncMode
from spool.states import JobState
from spool.transitions import Spool

FIRST = b'{"tool": "echo", "params": {"message": "drop 1"}}'
NEWER = b'{"tool": "echo", "params": {"message": "drop 2"}}'


def _b_takes_the_newer_drop(mover: Mover, src: Path, held: list[int]) -> Callable[..., bool]:
    """``mover.move``, before A's first move: the newer drop renamed over ``src`` and
    opened and locked there by claimant B (its descriptor put in ``held``)."""
    real = mover.move

    def move(a: StrPath, b: StrPath, **kw: object) -> bool:
        if not held and os.fspath(a) == os.fspath(src):
            spare = src.parent.parent / "tmp" / "drop2"
            spare.write_bytes(NEWER)
            os.rename(spare, src)
            fd = os.open(src, OPEN_FLAGS)
            assert try_lock(fd)
            held.append(fd)
        return real(a, b, **kw)  # type: ignore[arg-type]
    return move


@pytest.fixture
def spool_dir(tmp_path: Path) -> tuple[Layout, Mover, Path, Path]:
    layout = Layout(tmp_path / "spool")
    mover = Mover(layout, FsyncMode.NEVER)
    mover.make_folders()
    src = Path(layout.job_str(JobState.PENDING, "x"))
    dst = Path(layout.job_str(JobState.RUNNING, "x"))
    src.write_bytes(FIRST)
    return layout, mover, src, dst


def _a_claims_beside_b(mover: Mover, src: Path, dst: Path,
                       monkeypatch: pytest.MonkeyPatch) -> int:
    """A's claim of ``src``, B taking the newer drop before A's move: None (the file A
    moved is B's); B's descriptor, its lock held."""
    held: list[int] = []
    monkeypatch.setattr(mover, "move", _b_takes_the_newer_drop(mover, src, held))
    assert take(mover, src, dst, "x") is None
    monkeypatch.undo()
    return held[0]


def test_a_newer_drop_another_claimant_holds_goes_back_to_pending(
        spool_dir: tuple[Layout, Mover, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    _, mover, src, dst = spool_dir
    held = _a_claims_beside_b(mover, src, dst, monkeypatch)
    assert not dst.exists(), "the newer drop was left in running/ under B's lock"
    assert src.read_bytes() == NEWER
    # B's move, after A's: it lands, the claim B holds the lock of.
    assert mover.move(src, dst)
    assert os.fstat(held).st_ino == os.lstat(dst).st_ino
    os.close(held)


def test_the_newer_drop_is_claimed_later_when_its_claimant_let_go(
        spool_dir: tuple[Layout, Mover, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    layout, mover, src, dst = spool_dir
    # B's move found nothing, before A gave the file back: it let go.
    os.close(_a_claims_beside_b(mover, src, dst, monkeypatch))
    # Nothing for recovery to fail: no orphan in running/.
    report = Recovery(Spool(layout, mover)).scan()
    assert not report.abandoned and not report.requeued
    assert not os.listdir(os.path.dirname(layout.job_str(JobState.FAILED, "x")))
    claim = take(mover, src, dst, "x")
    assert claim is not None and claim.data == NEWER
    claim.close()


def test_a_newer_drop_a_recovery_scan_leased_and_the_claim_gave_back_is_no_orphan(
        spool_dir: tuple[Layout, Mover, Path, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The newer drop the claim's move took into running/ was leased there by another
    processor's recovery scan (unleased in running/: an orphan) before the claim locked
    it; the claim gave it back to pending/, and the scan then failed it "abandoned",
    beside the same job pending (the session's own review).  The scan sees it moved."""
    layout, mover, src, dst = spool_dir
    scanned: list[Claim | None] = []
    real_lock = claim_module.try_lock

    def try_lock(fd: int) -> bool:
        if len(calls) == 1:  # the claim's lock of the newer file in running/
            scanned.append(lease(dst, "x"))
        calls.append(fd)
        return real_lock(fd)

    calls: list[int] = []
    real_move = mover.move

    def move(a: StrPath, b: StrPath, **kw: object) -> bool:
        if not calls[1:] and os.fspath(a) == os.fspath(src) and src.read_bytes() == FIRST:
            spare = src.parent.parent / "tmp" / "drop2"
            spare.write_bytes(NEWER)
            os.rename(spare, src)
        return real_move(a, b, **kw)  # type: ignore[arg-type]

    monkeypatch.setattr(mover, "move", move)
    monkeypatch.setattr(claim_module, "try_lock", try_lock)
    assert take(mover, src, dst, "x") is None
    monkeypatch.undo()
    [held] = scanned
    assert held is not None and src.read_bytes() == NEWER and not dst.exists()
    report = RecoveryReport()
    try:
        Recovery(Spool(layout, mover))._orphans._settle_orphan(held, report)
    finally:
        held.close()
    assert not report.abandoned and not report.requeued
    assert not os.listdir(os.path.dirname(layout.job_str(JobState.FAILED, "x")))
    assert src.read_bytes() == NEWER
