"""What the daemons' and the CLI's commands share about their standard streams."""

from __future__ import annotations

import contextlib
import os
from typing import TextIO

EXIT_BROKEN_PIPE = 141
"""A reader that went away (``| head``): what a shell reports for a death by SIGPIPE,
said quietly."""


def discard(stream: TextIO | None) -> None:
    """Point ``stream``'s descriptor at /dev/null: what is still buffered goes there at
    exit, so the interpreter's final flush cannot fail a second time ("Exception ignored
    ...")."""
    if stream is not None:
        with contextlib.suppress(OSError, ValueError, AttributeError):  # no descriptor
            os.dup2(os.open(os.devnull, os.O_WRONLY), stream.fileno())
