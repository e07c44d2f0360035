"""Tool labels of /metrics cannot be taken by drops naming tools that do not exist.

Labels are capped at MAX_TOOL_LABELS names, first come first served: 64 drops naming
made-up tools (each failed ``unknown_tool``) after statusd's start took every slot,
and the real tools' runs were counted as ``other`` for the rest of its life.
"""

from __future__ import annotations

from typing import Any

from spool.states import JobState
from statusd.items import Item
from statusd.metrics import MAX_TOOL_LABELS, Metrics


def _item(n: int, tool: str, state: JobState, error_type: str | None = None,
          duration_s: float | None = 0.1) -> Item:
    return Item(f"j{n}", state, tool, (n, f"j{n}"), None, b"{}", b"{}",  # type: ignore[arg-type]
                duration_s=duration_s, error_type=error_type)


def _transitions(metrics: Metrics) -> dict[tuple[str, str], float]:
    out = {}
    for family in metrics.transitions.collect():
        for sample in family.samples:
            if sample.name == "spoolq_transitions_total":
                out[(sample.labels["tool"], sample.labels["outcome"])] = sample.value
    return out


def _status() -> dict[str, Any]:
    raise AssertionError("not scraped in this test")


def test_made_up_tool_names_do_not_take_the_labels_of_real_tools() -> None:
    metrics = Metrics(_status)
    for n in range(MAX_TOOL_LABELS + 10):
        metrics.observe_terminal(_item(n, f"made-up-{n}", JobState.FAILED, "unknown_tool"))
        metrics.observe_terminal(_item(n, f"bad-{n}", JobState.FAILED, "invalid_job"))
    metrics.observe_terminal(_item(1000, "run_backtest", JobState.DONE))
    metrics.observe_terminal(_item(1001, "sleep", JobState.FAILED, "timeout"))
    metrics.observe_terminal(_item(1002, "run_backtest", JobState.FAILED, "unknown_tool"))
    seen = _transitions(metrics)
    assert seen[("run_backtest", "done")] == 1
    assert seen[("sleep", "failed")] == 1
    assert seen[("run_backtest", "failed")] == 1, "a name that has a label keeps it"
    assert seen[("other", "failed")] == 2 * (MAX_TOOL_LABELS + 10)
    assert not any(tool.startswith(("made-up", "bad-")) for tool, _ in seen)


def test_jobs_that_ran_no_tool_take_no_run_time() -> None:
    """``spoolq_job_duration_seconds`` is the run time of finished jobs: a job failed
    ``unknown_tool`` or ``invalid_job`` at its claim (its record has a ``duration_s``,
    the claim to the record) ran nothing, and was observed under ``other`` (h389)."""
    metrics = Metrics(_status)
    metrics.observe_terminal(_item(1, "made-up", JobState.FAILED, "unknown_tool", 0.002))
    metrics.observe_terminal(_item(2, "bad", JobState.FAILED, "invalid_job", 0.001))
    metrics.observe_terminal(_item(3, "sleep", JobState.DONE, duration_s=2.0))
    counts = {sample.labels["tool"]: sample.value
              for family in metrics.duration.collect() for sample in family.samples
              if sample.name == "spoolq_job_duration_seconds_count"}
    assert counts == {"sleep": 1}


def test_a_run_abandoned_by_its_dead_processor_is_counted_under_its_tool() -> None:
    """After a processor's SIGKILL, recovery fails the runs it left ``abandoned``: they
    ran a real tool, yet were counted under ``other`` until that tool's first done or
    failed run in this statusd's life (after a statusd restart, every one)."""
    metrics = Metrics(_status)
    metrics.observe_terminal(_item(1, "sleep", JobState.FAILED, "abandoned"))
    metrics.observe_terminal(_item(2, "sleep", JobState.DONE))
    seen = _transitions(metrics)
    assert seen == {("sleep", "failed"): 1, ("sleep", "done"): 1}


def test_a_run_cancelled_while_it_ran_is_counted_under_its_tool() -> None:
    """A researcher cancelling a running backtest (``spoolq cancel``, the page's button):
    it ran a real tool, yet was counted under ``other`` until that tool's first done
    run in this statusd's life.  A drop cancelled while pending (no ``duration_s``) may
    name any tool: it takes no label."""
    metrics = Metrics(_status)
    metrics.observe_terminal(_item(1, "made-up", JobState.FAILED, "cancelled", duration_s=None))
    metrics.observe_terminal(_item(2, "sleep", JobState.FAILED, "cancelled", duration_s=3.3))
    assert _transitions(metrics) == {("other", "failed"): 1, ("sleep", "failed"): 1}
