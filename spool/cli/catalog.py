"""What a job may say, and the data its tools read: ``schema``, ``tools``, ``data synth``.

``spool`` never imports ``processor`` (DESIGN section 1).  ``tools`` reads the
catalogue a live processor publishes in ``owners/<owner>.json``; with none
running it asks the installed one (``python -m processor tools --json``) in a
subprocess and says so.  ``data synth`` likewise runs
``python -m processor.quant.synth``.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import orjson

from spool.catalogue import catalogue_differences, catalogue_entry, merged_catalogue, param_names
from spool.cli import parse
from spool.cli.command import EXIT_OK, Command, add_globals, add_json, layout_of, note
from spool.cli.render import ToolLimits, emit_json, printable, printable_path, table
from spool.errors import SpoolError, SpoolIOError
from spool.layout import Layout

if TYPE_CHECKING:
    from spool.models import OwnerStatus, Record
    from spool.settings import Settings

DESCRIPTION_CHARS = 50

# -- schema ---------------------------------------------------------------------------------


def _configure_schema(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("which", nargs="?", choices=["job", "record"], metavar="job|record",
                        help="one schema (default: both, as {\"job\": ..., \"record\": ...})")
    add_json(parser, "the schema (it is always JSON; accepted for symmetry)")


def run_schema(args: argparse.Namespace, settings: Settings) -> int:
    from spool.models import schemas  # noqa: PLC0415 - lazy, see spool.cli

    docs = schemas()
    emit_json(docs[args.which] if args.which else docs)
    return EXIT_OK


# -- tools ----------------------------------------------------------------------------------


def _configure_tools(parser: argparse.ArgumentParser) -> None:
    add_json(parser, "a list of {name, mode, timeout, category, max_attempts, description, "
             "params_schema}")


def run_tools(args: argparse.Namespace, settings: Settings) -> int:
    layout = layout_of(settings)
    differences: list[str] = []
    if _may_list(layout.owners):
        try:
            tools, source, differences = live_tools(layout)
        except SpoolIOError as exc:
            # A live processor's catalogue unread (EACCES, EIO): the installed one, and
            # why, rather than no list at all, or "none is running" of one that may be.
            tools, source = installed_tools(), f"the installed processor ({exc})"
        else:
            if not tools:
                tools, source = installed_tools(), "the installed processor (none is running)"
    else:  # a member of the submit group only (docs/operations.md, "Permissions")
        tools, source = installed_tools(), "the installed processor (this user may not list " \
            "owners/, where a running processor publishes its own, which its SPOOL_TOOLS " \
            "may make differ)"
    note(f"tools of {source}")
    for line in differences:
        note(line)
    if args.json:
        emit_json(tools)
        return EXIT_OK
    print(catalogue_table(tools))
    return EXIT_OK


def catalogue_table(tools: list[dict[str, Any]]) -> str:
    """The catalogue as a table, a row a tool (:func:`spool.catalogue.catalogue_entry`'s
    shape), as ``spoolq tools`` and ``spool-processor tools`` print it: they printed one
    catalogue in two formats.  Descriptions are cut short for a terminal only: through
    a pipe or into a file (``| grep``), they were cut just the same (h386)."""
    whole = sys.stdout is None or not sys.stdout.isatty()
    rows = [[t["name"], t["mode"] or "-",
             "-" if t["timeout"] is None else f"{t['timeout']:g}s",
             _params(t["params_schema"]),
             t["description"] if whole else _short(t["description"])] for t in tools]
    return table(["TOOL", "MODE", "TIMEOUT", "PARAMS (* required)", "DESCRIPTION"], rows)


def live_tools(layout: Layout) -> tuple[list[dict[str, Any]], str, list[str]]:
    """The catalogue of every live processor on the spool (merged by name), its source,
    and what their catalogues disagree on (:func:`spool.catalogue.catalogue_differences`)."""
    from spool.reader import SpoolReader  # noqa: PLC0415 - lazy, see spool.cli

    live = SpoolReader(layout).processors() if layout.exists() else []
    owners = ", ".join(status.owner for status in live)
    return (merged_catalogue(live), f"the running processor ({owners})",
            catalogue_differences(live))


LiveReader = Callable[[], "list[OwnerStatus] | None"]
"""The live processors' status files (:func:`spool.stats.readable_processors`), read at
the first call only (:func:`live_reader`)."""


def live_reader(layout: Layout) -> LiveReader:
    """A :data:`LiveReader` of ``layout``'s processors: ``spoolq show`` read every status
    file once for each limit it shows, and again for why a pending job waits."""
    from spool.stats import readable_processors  # noqa: PLC0415 - lazy, see spool.cli

    return functools.cache(lambda: readable_processors(layout))


def shown_limits(layout: Layout, record: Record, as_json: bool,
                 live: LiveReader | None = None) -> ToolLimits | None:
    """What ``show_record`` needs of the catalogue: the limits of the record's tool when
    it is shown as text, else None (the JSON is the record as stored).  ``live``: the
    status files the command reads anyway (by default, ``layout``'s, read here)."""
    if as_json:
        return None
    from spool.stats import live_limit  # noqa: PLC0415 - lazy, see spool.cli

    read = live or live_reader(layout)

    def limit(key: str) -> int | float | None:
        return None if record.tool is None else live_limit(read(), record.tool, key)

    attempts = None if record.max_attempts is not None else limit("max_attempts")
    timeout = limit("timeout") if record.timeout else None
    return ToolLimits(None if attempts is None else int(attempts),
                      None if timeout is None else float(timeout))


def _may_list(folder: Path) -> bool:
    """False for a folder this user may not list; True when there is none (no spool)."""
    return not folder.is_dir() or os.access(folder, os.R_OK | os.X_OK,
                                            effective_ids=os.access in os.supports_effective_ids)


def installed_tools() -> list[dict[str, Any]]:
    """``python -m processor tools --json`` (inherits the environment: SPOOL_TOOLS)."""
    asked = "no running processor's tools to show, and 'python -m processor tools'"
    # -P: not the working directory first on the path, where the daemon (spool-processor)
    # has none: a module found there was listed, and the daemon then refused it (QA).
    proc = _run_python(asked, ["-P", "-m", "processor", "tools", "--json"])
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SpoolError(f"{asked} failed: {last[0]}")
    try:
        entries = orjson.loads(proc.stdout)
    except orjson.JSONDecodeError as exc:
        raise SpoolError(f"{asked} wrote no catalogue (not JSON: {exc})") from None
    return [catalogue_entry(raw) for raw in entries]


def _run_python(what: str, args: list[str]) -> subprocess.CompletedProcess[bytes]:
    """This interpreter run with ``args``; a SpoolError saying ``what`` could not start (the
    bare OSError named only the interpreter's path, not why spoolq ran it)."""
    try:
        return subprocess.run([sys.executable, *args], capture_output=True, check=False)
    except OSError as exc:
        raise SpoolError(f"{what} could not start: {exc.strerror} ({sys.executable})") from exc


def _params(schema: dict[str, Any]) -> str:
    return ", ".join(param_names(schema)) or "-"


def _short(text: str) -> str:
    return text if len(text) <= DESCRIPTION_CHARS else text[: DESCRIPTION_CHARS - 3] + "..."


# -- data synth -----------------------------------------------------------------------------


def _configure_data(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="data_command", metavar="COMMAND", required=True)
    synth = sub.add_parser("synth", help="write seeded synthetic OHLCV CSV files",
                           description="Write one seeded synthetic OHLCV CSV file per symbol "
                           "for the built-in quant tools (python -m processor.quant.synth).")
    synth.add_argument("--symbols", type=parse.positive_int, default=50, metavar="N",
                       help="how many symbols (default 50)")
    synth.add_argument("--bars", type=parse.positive_int, default=2520, metavar="T",
                       help="daily bars per symbol (default 2520, ten years)")
    synth.add_argument("--seed", type=parse.seed, default=0, metavar="S",
                       help="random seed (default 0)")
    synth.add_argument("--data-dir", metavar="D",
                       help="where to write (default: SPOOL_DATA_DIR, else $SPOOL_DIR/data)")
    add_globals(synth, on_command=True)
    add_json(synth, '{"data_dir", "symbols", "bars", "seed"}')


def run_data_synth(args: argparse.Namespace, settings: Settings) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    proc = _run_python("data synth (python -m processor.quant.synth)", [
        "-m", "processor.quant.synth", "--symbols", str(args.symbols), "--bars",
        str(args.bars), "--seed", str(args.seed), "--data-dir", str(data_dir)])
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise SpoolError(f"data synth failed: {last[0]}")
    if args.json:
        emit_json({"data_dir": str(data_dir), "symbols": args.symbols, "bars": args.bars,
                   "seed": args.seed})
    else:
        print(printable_path(f"wrote {args.symbols} symbols x {args.bars} bars to {data_dir}"),
              flush=True)
    for line in proc.stderr.decode(errors="replace").splitlines():  # its note of other files
        print(printable(line), file=sys.stderr)
    return EXIT_OK


TOOLS = Command(
    "tools", "the tool catalogue: name, mode, timeout, params", _configure_tools,
    run_tools,
    description="List the tools jobs may name, from the running processor's status "
    "file, or (none running, or owners/ not listable by this user: a member of the "
    "submit group only) from the installed processor; stderr says which.")
SCHEMA = Command(
    "schema", "JSON Schema of the job file and the record", _configure_schema,
    run_schema)
DATA = Command(
    "data", "data for the built-in quant tools", _configure_data, run_data_synth)
