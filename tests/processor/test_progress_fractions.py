"""A tool's progress fractions reach every reader (the worker's reports, the progress
file, the WebSocket) rounded at the one place a report passes, the tool's context: a
sum of fractions carried float noise (``0.020700000000000003``) to them all."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar

from processor.quant.synth import write_synthetic
from processor.quant.tools import QUANT_TOOLS
from processor.runner import Context, run_tool
from processor.tools import BaseTool, ToolContext, ToolResult


class Noisy(BaseTool):
    name: ClassVar[str] = "t_noisy"

    def execute(self, params: Any, ctx: ToolContext) -> ToolResult:
        for fraction in (0.0069 * 3, 0.1 + 0.2, 0.99996, 1.2, float("nan"), float("inf"),
                         float("-inf"), 1.0):
            ctx.progress(fraction, "step")
        return ToolResult.ok()


def reports(tool: type[BaseTool], params: dict[str, Any], data_dir: Path) -> list[float]:
    seen: list[float] = []
    ctx = Context("job-1", data_dir, lambda fraction, message: seen.append(fraction), {})
    assert run_tool(tool, "job-1", params, ctx).ok
    return seen


def test_fractions_are_rounded_short_of_done_until_done(tmp_path: Path) -> None:
    # Clamped, infinities too (inf read 0 %: QA h395); NaN is no amount: 0.
    assert reports(Noisy, {}, tmp_path) == [0.0207, 0.3, 0.9999, 1.0, 0.0, 1.0, 0.0, 1.0]


def test_a_quant_tools_fractions_are_clean_and_in_order(tmp_path: Path) -> None:
    symbols = write_synthetic(tmp_path, symbols=7, bars=300, seed=3)
    analyze = next(cls for cls in QUANT_TOOLS if cls.name == "analyze_factor")
    seen = reports(analyze, {"symbols": symbols, "horizons": [1, 3]}, tmp_path)
    assert len(seen) > 10 and seen == sorted(seen) and seen[-1] == 1.0
    assert seen.count(1.0) == 1
    assert all(repr(f) == repr(round(f, 4)) and len(repr(f)) <= 6 for f in seen), seen


def test_a_progress_report_with_no_message_has_none() -> None:
    """``ctx.progress(0.5, None)``: the message read "None" (QA h380)."""
    seen: list[tuple[float, str]] = []
    ctx = Context("job-1", Path("."), lambda fraction, message: seen.append((fraction, message)),
                  {})
    ctx.progress(0.5, None)
    ctx.progress(0.75, 3)  # type: ignore[arg-type]  # not text: written as text
    assert seen == [(0.5, ""), (0.75, "3")]
