"""``bench/chaos.py --split-tools``: the tools of a processor not yet upgraded.

Loaded through ``SPOOL_TOOLS=bench.chaos_tools_fast`` by every other processor of the
soak: it offers ``chaos_fast`` only, so the ``chaos_compute`` jobs are left to the
processors that load :mod:`bench.chaos_tools` (:mod:`processor.elsewhere`), as in a
rolling upgrade that adds a tool.
"""

from __future__ import annotations

from typing import ClassVar

from bench.chaos_tools import ChaosFast


class ChaosFastOnly(ChaosFast):
    """:class:`~bench.chaos_tools.ChaosFast`, defined here for the registry (it loads the
    tools a module defines, not those it imports)."""

    name: ClassVar[str] = "chaos_fast"
