"""``spoolq``: submit and manage jobs of a spool, no daemon needed.

Exit codes (DESIGN section 9): 0 success; 1 the job or thing asked for does
not exist or cannot be done (``wait``: the job failed); 2 usage errors;
``wait`` 3 when the job is still not finished at ``--timeout``.  Errors are
one line on stderr.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

import orjson
from pydantic import ValidationError

from spool.cli import demo, parse
from spool.cli.render import ProgressBar, record_lines, record_row, table
from spool.client import Client
from spool.errors import ConflictError, NotFoundError, SpoolError
from spool.fsops import Mover
from spool.layout import Layout
from spool.models import Job, Record, schemas
from spool.reader import SpoolReader
from spool.settings import FsyncMode, Settings, load_settings
from spool.states import TERMINAL, JobState

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_PENDING = 0, 1, 2, 3
_JSON = orjson.OPT_INDENT_2 | orjson.OPT_UTC_Z | orjson.OPT_NON_STR_KEYS

Command = Callable[[argparse.Namespace, Settings], int]


class UsageError(Exception):
    """Bad arguments found after parsing: exit 2."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_USAGE, f"{self.prog}: error: {message}\n")


# -- output ---------------------------------------------------------------------------------


def emit_json(value: Any) -> None:
    sys.stdout.write(orjson.dumps(value, option=_JSON, default=str).decode() + "\n")


def record_json(record: Record) -> dict[str, Any]:
    data: dict[str, Any] = orjson.loads(orjson.dumps(record.model_dump(exclude_none=True),
                                                     option=orjson.OPT_UTC_Z))
    return data


def show_record(record: Record, as_json: bool) -> None:
    if as_json:
        emit_json(record_json(record))
    else:
        print("\n".join(record_lines(record)))


def client_of(settings: Settings) -> Client:
    return Client.from_settings(settings)


# -- commands -------------------------------------------------------------------------------


def cmd_init(args: argparse.Namespace, settings: Settings) -> int:
    layout = Layout(settings.spool_dir)
    if args.system:
        from spool.cli.system import init_system  # noqa: PLC0415 - needs pwd/grp, root only

        init_system(layout, settings.fsync, args.user, args.group)
    else:
        Mover(layout, settings.fsync).make_folders()
    if args.json:
        emit_json({"spool": str(layout.root), "folders": [p.name for p in layout.all_folders()]})
    else:
        print(f"spool ready at {layout.root}")
    return EXIT_OK


def _job_from_args(args: argparse.Namespace) -> Job:
    if args.file:
        try:
            data = Path(args.file).read_bytes()
        except OSError as exc:
            raise UsageError(f"cannot read {args.file}: {exc.strerror}") from exc
        try:
            return Job.model_validate_json(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "job"
            raise SpoolError(f"{args.file} is not a valid job: {where}: {first['msg']}") from exc
    if not args.tool:
        raise UsageError("give a TOOL name or --file JOB.json")
    params = dict(args.params or {})
    try:
        params.update(parse.key_values(args.param or []))
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    fields: dict[str, Any] = {"tool": args.tool, "params": params}
    for name in ("priority", "timeout", "max_attempts", "not_before", "meta"):
        value = getattr(args, name)
        if value is not None:
            fields[name] = value
    try:
        return Job.model_validate(fields)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "job"
        raise UsageError(f"{where}: {first['msg']}") from exc


def cmd_submit(args: argparse.Namespace, settings: Settings) -> int:
    job = _job_from_args(args)
    try:
        job_id = client_of(settings).submit(job, args.id)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.wait:
        if not args.json:
            print(job_id)
        return _wait(settings, job_id, None, args.json, quiet=False)
    if args.json:
        emit_json({"id": job_id})
    else:
        print(job_id)
    return EXIT_OK


def cmd_ls(args: argparse.Namespace, settings: Settings) -> int:
    reader = SpoolReader(Layout(settings.spool_dir))
    Layout(settings.spool_dir).require()
    try:
        page = reader.page(state=args.state, tool=args.tool, limit=args.limit, cursor=args.cursor)
    except ValueError as exc:
        raise UsageError(str(exc)) from exc
    if args.json:
        emit_json({"tasks": [record_json(r) for r in page.records],
                   "next_cursor": page.next_cursor})
        return EXIT_OK
    header = ["ID", "STATE", "TOOL", "SUBMITTED", "TIME", "DETAIL"]
    print(table(header, [record_row(r) for r in page.records]))
    if page.next_cursor:
        print(f"more: spoolq ls --cursor {page.next_cursor}", file=sys.stderr)
    return EXIT_OK


def cmd_show(args: argparse.Namespace, settings: Settings) -> int:
    Layout(settings.spool_dir).require()
    show_record(SpoolReader(Layout(settings.spool_dir)).get(args.id), args.json)
    return EXIT_OK


def cmd_wait(args: argparse.Namespace, settings: Settings) -> int:
    return _wait(settings, args.id, args.timeout, args.json, args.quiet)


def _wait(settings: Settings, job_id: str, timeout: float | None, as_json: bool,
          quiet: bool) -> int:
    client = client_of(settings)
    bar = ProgressBar(sys.stderr) if sys.stderr.isatty() and not quiet else None
    try:
        record = client.wait(job_id, timeout, on_update=bar.update if bar else None)
    finally:
        if bar is not None:
            bar.close()
    if not quiet:
        show_record(record, as_json)
    if record.state is JobState.DONE:
        return EXIT_OK
    if record.state is JobState.FAILED:
        return EXIT_FAILED
    if not quiet:
        print(f"spoolq: job {job_id} is still {record.state} after {timeout:g} s",
              file=sys.stderr)
    return EXIT_PENDING


def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    record = client_of(settings).cancel(args.id, wait_s=args.wait_s)
    show_record(record, args.json)
    return EXIT_OK


def cmd_retry(args: argparse.Namespace, settings: Settings) -> int:
    record = client_of(settings).retry(args.id)
    show_record(record, args.json)
    return EXIT_OK


def cmd_purge(args: argparse.Namespace, settings: Settings) -> int:
    states = sorted(TERMINAL) if args.state == "all" else [JobState(args.state)]
    client = client_of(settings)
    if args.dry_run:
        cutoff_ns = (time.time() - args.older_than) * 1e9
        from spool.reader import scan_folder  # noqa: PLC0415

        entries = [e for s in states for e in scan_folder(client.layout, s)]
        removed = sum(1 for e in entries if e.mtime_ns < cutoff_ns)
        kept = len(entries) - removed
    else:
        report = client.purge(args.older_than, states)
        removed, kept = report.removed, report.kept
    if args.json:
        emit_json({"removed": removed, "kept": kept, "dry_run": args.dry_run})
    else:
        verb = "would remove" if args.dry_run else "removed"
        print(f"{verb} {removed} record(s) older than {parse.human_age(args.older_than)}, "
              f"kept {kept}")
    return EXIT_OK


def cmd_stats(args: argparse.Namespace, settings: Settings) -> int:
    layout = Layout(settings.spool_dir)
    layout.require()
    stats = SpoolReader(layout).stats()
    if args.json:
        emit_json(stats)
        return EXIT_OK
    counts = stats["counts"]
    print("  ".join(f"{k} {v}" for k, v in counts.items()))
    print(f"oldest pending  {parse.human_age(stats['oldest_pending_age_s'])}")
    proc = stats["processor"]
    alive = "up" if proc["alive"] else "down"
    print(f"processor       {alive} ({proc['count']} live, heartbeat "
          f"{proc['heartbeat_at'] or '-'})")
    print(f"workers         {stats['busy_workers']} busy of {stats['job_num']} (JOB_NUM)")
    return EXIT_OK


def cmd_schema(args: argparse.Namespace, settings: Settings) -> int:
    docs = schemas()
    emit_json(docs if args.which == "all" else docs[args.which])
    return EXIT_OK


def cmd_tools(args: argparse.Namespace, settings: Settings) -> int:
    layout = Layout(settings.spool_dir)
    live = SpoolReader(layout).processors() if layout.exists() else []
    source = "the running processor"
    if live:
        tools = [{"name": t["name"], "mode": t["execution_mode"], "timeout":
                  t["execution_timeout"], "category": t.get("category"),
                  "description": t.get("description", ""),
                  "params_schema": t["params_schema"]} for t in live[0].tools]
    else:
        source = "the installed processor (none is running)"
        tools = _installed_tools(settings)
    if args.json:
        emit_json(tools)
        return EXIT_OK
    print(f"tools of {source}:", file=sys.stderr)
    rows = [[t["name"], t["mode"], f"{t['timeout']:g}s",
             ", ".join(t["params_schema"].get("properties", {})) or "-"] for t in tools]
    print(table(["TOOL", "MODE", "TIMEOUT", "PARAMS"], rows))
    return EXIT_OK


def _installed_tools(settings: Settings) -> list[dict[str, Any]]:
    env = {**os.environ, "SPOOL_DIR": str(settings.spool_dir)}
    proc = subprocess.run([sys.executable, "-m", "processor", "tools", "--json"], env=env,
                          capture_output=True, check=False)
    if proc.returncode != 0:
        last = proc.stderr.decode(errors="replace").strip().splitlines()[-1:] or ["?"]
        raise SpoolError(f"cannot list tools: spool-processor says: {last[0]}")
    tools: list[dict[str, Any]] = orjson.loads(proc.stdout)
    return tools


def cmd_data_synth(args: argparse.Namespace, settings: Settings) -> int:
    data_dir = Path(args.data_dir) if args.data_dir else settings.data_dir
    cmd = [sys.executable, "-m", "processor.quant.synth", "--symbols", str(args.symbols),
           "--bars", str(args.bars), "--seed", str(args.seed), "--data-dir", str(data_dir)]
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or ["?"]
        raise SpoolError(f"data synth failed: {last[0]}")
    if args.json:
        emit_json({"data_dir": str(data_dir), "symbols": args.symbols, "bars": args.bars,
                   "seed": args.seed})
    else:
        print(f"wrote {args.symbols} symbols x {args.bars} bars to {data_dir}")
    return EXIT_OK


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    return demo.run(args)


# -- the parser -----------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="spoolq", description=__doc__.split("\n\n")[0],
                     epilog="Settings come from SPOOL_* variables and .env; see DESIGN.md.")
    parser.add_argument("--spool-dir", help="the spool root (SPOOL_DIR)")
    parser.add_argument("--fsync", choices=[m.value for m in FsyncMode],
                        help="durability of writes (SPOOL_FSYNC)")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    _add_init(sub)
    _add_submit(sub)
    _add_ls(sub)
    _add_simple(sub)
    _add_purge(sub)
    p = sub.add_parser("stats", help="counts per state, oldest pending, processor liveness")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_stats)
    p = sub.add_parser("schema", help="JSON Schema of the job file and the record")
    p.add_argument("which", nargs="?", choices=["all", "job", "record"], default="all")
    p.add_argument("--json", action="store_true", help="(always JSON)")
    p.set_defaults(func=cmd_schema)
    p = sub.add_parser("tools", help="the tool catalogue: name, mode, timeout, params")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_tools)
    _add_data(sub)
    demo.register(sub)
    return parser


def _add_init(sub: Any) -> None:
    p = sub.add_parser("init", help="create the spool's folders",
                       description="Create the spool's folders (idempotent).  --system sets "
                       "Postfix-style permissions: pending/ and tmp/ mode 2730 (setgid, "
                       "writable by the submit group), the rest private to the spool user.")
    p.add_argument("--system", action="store_true", help="system spool permissions (root)")
    p.add_argument("--user", default="spoolq", help="spool owner with --system")
    p.add_argument("--group", default="spoolq-submit", help="submit group with --system")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_init)


def _add_submit(sub: Any) -> None:
    p = sub.add_parser("submit", help="drop a job into pending/ and print its id",
                       description="Submit TOOL with params, or a whole job file.  -p values "
                       "are JSON when they parse (-p fast=10 -p symbols='[\"AAA\"]'), else "
                       "strings.")
    p.add_argument("tool", nargs="?", help="a registered tool name")
    p.add_argument("-p", dest="param", action="append", metavar="KEY=VALUE", help="a param")
    p.add_argument("--params", type=parse.json_object, help="params as a JSON object")
    p.add_argument("--file", help="a job file (JSON) to submit as it is")
    p.add_argument("--id", help="the job id (default: a new time-ordered id)")
    p.add_argument("--priority", type=int, help="higher runs first")
    p.add_argument("--timeout", type=parse.positive_seconds, help="seconds or 30s/5m/1h")
    p.add_argument("--max-attempts", type=int, help="runs allowed (retries on timeout, crash)")
    p.add_argument("--not-before", type=parse.timestamp, help="ISO 8601 with offset, or epoch")
    p.add_argument("--meta", type=parse.json_object, help="a JSON object echoed back")
    p.add_argument("--wait", action="store_true", help="then wait for it (exit codes of wait)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_submit)


def _add_ls(sub: Any) -> None:
    p = sub.add_parser("ls", help="list jobs, newest first")
    p.add_argument("--state", type=JobState, choices=list(JobState))
    p.add_argument("--tool")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--cursor", help="continue after a previous page")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_ls)


def _add_simple(sub: Any) -> None:
    p = sub.add_parser("show", help="one job's record")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_show)
    p = sub.add_parser("wait", help="wait for a job: exit 0 done, 1 failed, 3 still running",
                       description="Wait until the job is done (exit 0) or failed (exit 1); "
                       "exit 3 if it is still pending or running at --timeout.  A progress "
                       "bar is drawn on a terminal.")
    p.add_argument("id")
    p.add_argument("--timeout", type=parse.positive_seconds, help="give up after this long")
    p.add_argument("--quiet", action="store_true", help="no output, exit code only")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_wait)
    p = sub.add_parser("cancel", help="cancel a pending or running job",
                       description="A pending job fails 'cancelled' at once; a running job is "
                       "killed by its processor and fails 'cancelled'.")
    p.add_argument("id")
    p.add_argument("--wait-s", type=float, default=5.0, help="how long to wait for a running "
                   "job to stop (default 5)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_cancel)
    p = sub.add_parser("retry", help="move a failed job back to pending/",
                       description="Move a failed job back to pending/ with attempts reset "
                       "to 0 (it gets its full max_attempts again); its failed record goes "
                       "with it.  Quarantined files cannot be retried: fix and drop them.")
    p.add_argument("id")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_retry)


def _add_purge(sub: Any) -> None:
    p = sub.add_parser("purge", help="remove finished records older than a duration")
    p.add_argument("--older-than", type=parse.duration, required=True,
                   help="e.g. 30s, 15m, 12h, 7d, 2w")
    p.add_argument("--state", choices=["done", "failed", "all"], default="all")
    p.add_argument("--dry-run", action="store_true", help="count, remove nothing")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_purge)


def _add_data(sub: Any) -> None:
    data = sub.add_parser("data", help="data for the built-in quant tools")
    data_sub = data.add_subparsers(dest="data_command", metavar="COMMAND", parser_class=_Parser)
    data_sub.required = True
    p = data_sub.add_parser("synth", help="write seeded synthetic OHLCV CSV files")
    p.add_argument("--symbols", type=int, default=50)
    p.add_argument("--bars", type=int, default=2520)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--data-dir", help="default: SPOOL_DATA_DIR or $SPOOL_DIR/data")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_data_synth)


# -- entry point ----------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        settings = load_settings(spool_dir=args.spool_dir, fsync=args.fsync)
        func: Command = args.func if args.func is not demo.run else cmd_demo
        return func(args, settings)
    except UsageError as exc:
        print(f"spoolq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except (NotFoundError, ConflictError, SpoolError) as exc:
        print(f"spoolq: error: {exc}", file=sys.stderr)
        return EXIT_FAILED
    except ValueError as exc:
        print(f"spoolq: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"spoolq: error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return EXIT_FAILED


if __name__ == "__main__":
    sys.exit(main())
