"""The stats document's ``left_why``: why each tool's jobs in ``left_to_others`` wait.

A processor that does not load a job's tool leaves it in ``pending/`` while another live
processor offers the tool, while a processor starts (its tools not said yet), or while
the tool's mark in ``offers/`` is under a restart's grace (processor.elsewhere).  The
document counted them by tool and said nothing of why: the dashboard called all three
"left to the processors that offer tool X ... it runs as their workers come free",
though in the last the job fails ``unknown_tool`` once the grace is over (QA h418).
``left_why`` says it as ``spoolq show`` does (spool.stats.pending_wait).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import pytest
from statusdkit import FakeOwner, ServerThread, request, submit, wait_for

from spool.lease import OwnerLease
from spool.offer_marks import OfferMarks
from spool.stats import left_why
from spool.transitions import Spool
from statusd import services as services_module


def _stats(server: ServerThread, query: str = "") -> dict[str, object]:
    reply = request(server.base, "GET", "/api/v1/stats" + query)
    assert reply.status == 200, reply.body
    doc: dict[str, object] = reply.json()
    return doc


def _stats_once_pending(server: ServerThread, query: str = "", jobs: int = 1
                        ) -> dict[str, object]:
    """The stats once statusd's index has the ``jobs`` submitted: ``left_to_others`` is
    capped by the pending count, 0 until then (the full suite's load: {} in 2 of 4
    tests)."""
    def pending() -> dict[str, object] | None:
        doc = _stats(server, query)
        counts = doc["counts"]
        return doc if isinstance(counts, dict) and counts["pending"] == jobs else None

    doc: dict[str, object] = wait_for(pending, 30, "the job pending in statusd's index")
    return doc


def test_a_tool_only_a_mark_keeps_says_it_fails_once_the_grace_is_over(
        server: ServerThread, spool: Spool) -> None:
    """Case (c): no processor offers ``nap`` now; its mark is a moment old (the one that
    offered it stopped cleanly)."""
    OfferMarks(spool.mover, ["nap"]).touch()
    lacks = FakeOwner(spool, "lacks-2-bbbb", busy=0, left_to_others={"nap": 1})
    submit(spool, "napping", tool="nap")
    try:
        for query in ("", "?partial=1"):  # the dashboard asks partial=1
            doc = _stats_once_pending(server, query)
            assert doc["left_to_others"] == {"nap": 1}
            why = doc["left_why"]
            assert isinstance(why, dict) and set(why) == {"nap"}, why
            assert why["nap"].startswith("no live processor offers tool 'nap', but one "
                                         "did "), why
            assert "then fails unknown_tool" in why["nap"], why
    finally:
        lacks.close()


def test_the_reasons_are_read_off_the_loop(server: ServerThread, spool: Spool,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    """``left_why`` looks into ``owners/`` (a processor starting) and ``offers/`` (the
    tool's mark): on the event loop, as first written (QA h418), a hung filesystem held
    every request, which the processors' own read is kept off the loop for.  Read in the
    write threads, and with nothing left, not at all."""
    threads: list[str] = []

    def recorded(*args: Any) -> dict[str, str]:
        threads.append(threading.current_thread().name)
        return left_why(*args)

    monkeypatch.setattr(services_module, "left_why", recorded)
    OfferMarks(spool.mover, ["nap"]).touch()
    lacks = FakeOwner(spool, "lacks-2-bbbb", busy=0, left_to_others={"nap": 1})
    submit(spool, "napping", tool="nap")
    try:
        for query in ("", "?partial=1"):
            threads.clear()
            why = _stats_once_pending(server, query)["left_why"]
            assert isinstance(why, dict) and set(why) == {"nap"}, why
            assert threads and all(t.startswith("statusd-write") for t in threads), threads
    finally:
        lacks.close()
    none = FakeOwner(spool, "none-3-cccc", busy=0)
    try:
        threads.clear()
        assert _stats(server)["left_why"] == {}
        assert threads == [], "read with no job left"
    finally:
        none.close()


def test_a_tool_a_starting_processor_may_offer_says_so(server: ServerThread,
                                                       spool: Spool) -> None:
    """Case (b): a lock file held with no status file beside it: a processor loading
    its tools, which may offer ``nap``."""
    lacks = FakeOwner(spool, "lacks-2-bbbb", busy=0, left_to_others={"nap": 1})
    starting = OwnerLease(spool.layout.owner_lock("box-77-cccc"))
    submit(spool, "napping", tool="nap")
    try:
        why = _stats_once_pending(server)["left_why"]
        assert why == {"nap": "no live processor offers tool 'nap', but the tools of pid "
                       "77 on box (starting) are not known yet: the job is left until "
                       "they are (docs/scaling.md)"}, why
    finally:
        starting.release()
        lacks.close()


def test_a_tool_another_live_processor_offers_names_it(server: ServerThread,
                                                       spool: Spool) -> None:
    """Case (a), the rolling upgrade: the job is left to the processor that offers its
    tool; a tool no processor leaves (``echo``) has no entry."""
    offers = FakeOwner(spool, "offers-1-aaaa", tools=[{"name": "echo"}, {"name": "nap"}],
                       host="one")
    lacks = FakeOwner(spool, "lacks-2-bbbb", busy=0, host="two", left_to_others={"nap": 1})
    submit(spool, "napping", tool="nap")
    submit(spool, "plain")
    try:
        why = _stats_once_pending(server, jobs=2)["left_why"]
        pid = os.getpid()
        assert why == {"nap": f"left to the processors that offer tool 'nap' (pid {pid} "
                       f"on one); pid {pid} on two does not load it"}, why
    finally:
        lacks.close()
        offers.close()


def test_nothing_left_says_nothing(server: ServerThread, spool: Spool) -> None:
    owner = FakeOwner(spool)
    submit(spool, "plain")
    try:
        doc = _stats(server)
        assert doc["left_to_others"] == {} and doc["left_why"] == {}
    finally:
        owner.close()
