"""``python -m startorder``: the processor, noting the order of two start-up steps.

An audit hook writes a line to the file ``STARTORDER_LOG`` names when the COMPUTE
forkserver's listening socket is bound (``socket.bind`` of an ``AF_UNIX`` address:
nothing else of the processor binds one) and when pydantic-settings is imported
(the settings loading).  Not imported by the forkserver: a module run with ``-m``
is not one its preload loads.
"""

from __future__ import annotations

import os
import socket
import sys
from typing import Any

_LOG = os.open(os.environ["STARTORDER_LOG"], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)


def _note(event: str, args: tuple[Any, ...]) -> None:
    if event == "import" and args[0] == "pydantic_settings":
        os.write(_LOG, b"settings\n")
    elif event == "socket.bind" and args[0].family == socket.AF_UNIX:
        os.write(_LOG, b"forkserver\n")


if __name__ == "__main__":
    sys.addaudithook(_note)  # before the processor's modules, which may load the settings
    from processor.__main__ import main

    sys.exit(main())
