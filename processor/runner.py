"""Running one tool call, the same way on the processor's loop thread (FAST) and in a
COMPUTE worker.

:func:`run_tool` never raises for anything the tool does: params that do not
validate become ``invalid_params`` (naming the field), a
:class:`~spool.errors.JobError` keeps its type, any other exception becomes
``tool_error`` with its traceback, and a result that is not JSON fails too,
so what reaches the record is always JSON (NaN and Infinity as null); the
tool's messages, traceback and progress text are made valid UTF-8 (a file
name that is not, as ``os.listdir`` gives it, is written with escapes).
"""

from __future__ import annotations

import contextvars
import json
import math
import os
import resource
import signal
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import orjson
from pydantic import ValidationError

from processor import capture
from processor.tools import BaseTool, ToolResult
from spool.errors import ErrorType, InvalidParams, JobError
from spool.models import PROGRESS_MESSAGE_CHARS
from spool.text import MAX_TRACEBACK_CHARS, cut_text, seconds_text, valid_text

if TYPE_CHECKING:
    from processor.executor import Task  # (executor imports Outcome from here)

T = TypeVar("T")

RESULT_OPTS = orjson.OPT_SERIALIZE_NUMPY | orjson.OPT_NON_STR_KEYS | orjson.OPT_UTC_Z
STR_KEYS_OPTS = RESULT_OPTS & ~orjson.OPT_NON_STR_KEYS
_NON_STR_KEY = "Dict key must be str"  # orjson's refusal of a key without OPT_NON_STR_KEYS
_MAX_DEPTH = 255  # orjson refuses deeper
DEADMAN_EXIT = 124  # a worker's exit status when its own deadline ended it (as timeout(1))
OUT_OF_MEMORY = "out of memory"
"""How the message of a run its tool's MemoryError ended begins (a COMPUTE worker then
retires): :func:`out_of_memory`."""
ProgressFn = Callable[[float, str], None]


@dataclass(slots=True)
class Outcome:
    """How a run ended; ``result`` is JSON bytes when it succeeded."""

    job_id: str
    error_type: ErrorType | None = None
    message: str | None = None
    traceback: str | None = None
    retryable: bool = False
    result_json: bytes | None = None
    pid: int = field(default_factory=os.getpid)
    duration_s: float = 0.0
    ended: float | None = None
    """When its worker sent it (monotonic: a local worker's, the processor's clock too),
    where the pool was told; not sent on (fields()): a Dask worker's host keeps its own
    clock.  None: when the processor read it."""

    def __reduce__(self) -> tuple[type[Outcome], tuple[Any, ...]]:
        # As processor.executor.Task: the fields as a tuple, cheaper to load.
        return Outcome, self.fields()

    def fields(self) -> tuple[Any, ...]:
        """The fields in order (``Outcome(*outcome.fields())`` is a copy): what a worker
        sends, plain data a third the cost of the object to pickle and to load."""
        return (self.job_id, self.error_type, self.message, self.traceback, self.retryable,
                self.result_json, self.pid, self.duration_s)

    @property
    def ok(self) -> bool:
        return self.error_type is None

    @classmethod
    def failed(cls, job_id: str, error: JobError, tb: str | None = None) -> Outcome:
        """The outcome of a JobError a tool raised, whatever its subclass made of it: an
        ``error_type`` that is none of DESIGN's is ``tool_error``, naming it, and only a
        ``retryable`` that is True retries.  A subclass with its own ``__init__`` (no
        ``retryable``) or ``error_type = "rejected"`` raised here, and crashed the
        processor (FAST) or the worker (COMPUTE, worker_crashed) (QA)."""
        message = _text_of(error)
        declared = getattr(error, "error_type", ErrorType.TOOL_ERROR)
        try:
            kind = ErrorType(declared)
        except ValueError:
            kind = ErrorType.TOOL_ERROR
            message = (f"{message} (its error_type {_text_of(declared, repr)[:60]} is none "
                       "of spoolq's: recorded as tool_error)")
        return cls(job_id, kind, message, tb, _flag(getattr(error, "retryable", False)))


FRACTION_DIGITS = 4
"""Decimals a progress fraction keeps (a hundredth of a percent)."""


def clean_fraction(fraction: float) -> float:
    """A tool's progress fraction as every reader gets it: clamped to 0 to 1 (infinities
    too: ``inf`` read 0 %, not the 100 % the docs' "clamped" promised, QA h395; 0 for
    NaN, which is no amount), rounded to :data:`FRACTION_DIGITS` decimals, and below 1.0 unless it
    is 1.0.  A sum of fractions carried float noise to the progress files and the
    WebSocket (``0.020700000000000003``); rounding keeps the order of two reports (it
    never puts a later one below an earlier), and 0.99996 stays short of done."""
    value = float(fraction)
    if math.isnan(value):
        return 0.0
    if value >= 1.0:
        return 1.0
    return min(round(max(0.0, value), FRACTION_DIGITS), 1.0 - 10.0**-FRACTION_DIGITS)


def _never() -> bool:
    return False


class ResourceCycle(RuntimeError):
    """``ctx.resource`` factories that ask for each other's keys (or one for its own): each
    would wait for the other for good.  Raised in the factory's job, which fails
    ``tool_error`` saying which keys; it waited until the jobs' timeouts (two threads),
    or recursed until ``RecursionError`` (one), before (QA h384)."""


class _Making:
    """A key's factory in progress: the lock it runs under, the thread running it, and
    whether the run of the job that runs it is over (timed out, its thread abandoned)
    with the factory still running."""

    __slots__ = ("abandoned", "lock", "owner")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.abandoned: Callable[[], bool] = _never
        self.owner: int | None = None


MAKING_POLL_S = 0.1
"""How often a job waiting for another's factory looks whether that job was abandoned."""


class Resources(dict[str, Any]):
    """What ``ctx.resource`` keeps: one cache a worker, and one in the processor for every
    FAST job.  Those jobs run at once on several threads, so each key has a lock its
    factory runs under: the jobs that ask for a key while it is being made wait for that
    one object, as "made once" promises, where each used to make its own (four loads of
    a model, all but the last connection leaked; QA h380).  A key's lock holds up only
    that key's askers, and a factory that raises leaves the key to the next one.

    A factory whose job's run ended (FAST timeout: its thread abandoned, still in the
    factory) no longer holds the key: the next asker makes it.  Waited for, one hung
    connect held every later job asking for that key until its own timeout, for the
    life of the processor, and their abandoned threads filled the lane (QA h384)."""

    def __init__(self) -> None:
        super().__init__()
        self._guard = threading.Lock()
        self._making: dict[str, _Making] = {}
        self._waiting: dict[int, str] = {}  # a thread -> the key whose factory it waits for
        self._local = threading.local()  # .keys: the keys this thread's factories make

    def making(self, key: str) -> _Making:
        """``key``'s factory in progress."""
        with self._guard:
            return self._making.setdefault(key, _Making())

    def make(self, key: str, factory: Callable[[], Any],
             abandoned: Callable[[], bool] = _never) -> None:
        """Run ``factory`` for ``key`` unless it is made meanwhile; ``abandoned``: the
        asking job's run is over.  :class:`ResourceCycle` when the factories of the keys
        this thread makes, or of those it waits for, come back to ``key``."""
        mine: list[str] = self._local.__dict__.setdefault("keys", [])
        if key in mine:  # asked for again by its own factory, or one it asked for
            raise ResourceCycle(_cycle_text([*mine[mine.index(key):], key]))
        making = self.making(key)
        try:
            while not making.lock.acquire(timeout=MAKING_POLL_S):
                making = self._after(key, making)
        finally:
            with self._guard:
                self._waiting.pop(threading.get_ident(), None)
        making.owner = threading.get_ident()
        mine.append(key)
        try:
            if key in self:
                return  # made while this job waited: that one
            prior, making.abandoned = making.abandoned, abandoned
            try:
                value = factory()
            finally:
                making.abandoned = prior
            self.setdefault(key, value)  # an abandoned factory returning late: the first
            with self._guard:
                if self._making.get(key) is making:
                    del self._making[key]  # made: askers find it without a lock
        finally:
            mine.pop()
            making.owner = None
            making.lock.release()

    def _after(self, key: str, making: _Making) -> _Making:
        """What a job waiting on ``making`` waits on next: a fresh one once the job
        running its factory was abandoned.  :class:`ResourceCycle` when that factory's
        thread waits, through others, for a key this thread's factories make."""
        me = threading.get_ident()
        with self._guard:
            current = self._making.get(key)
            if current is making and making.abandoned():
                current = None
            if current is None:
                current = self._making[key] = _Making()
                return current
            self._waiting[me] = key
            chain = [key]
            owner = current.owner
            while owner is not None and owner != me and len(chain) <= len(self._waiting):
                waited = self._waiting.get(owner)
                if waited is None or (held := self._making.get(waited)) is None:
                    return current
                chain.append(waited)
                owner = held.owner
            if owner != me:
                return current
            # No longer among the waiters before the guard is let go: another job of the
            # cycle looking meanwhile found it through this one and failed too (h391).
            del self._waiting[me]
        mine: list[str] = self._local.keys
        raise ResourceCycle(_cycle_text([*mine[mine.index(chain[-1]):], *chain]))


def _cycle_text(keys: list[str]) -> str:
    """``keys``, a cycle of keys each asked for by the previous one's factory (the last
    is the first again), as a :class:`ResourceCycle` says them."""
    if len(keys) == 2:
        return (f"ctx.resource: the factory of {keys[0]!r} asks for {keys[0]!r} itself, "
                "which it is making")
    path = " -> ".join(repr(k) for k in keys)
    return (f"ctx.resource: factories ask for each other's keys ({path}): each would wait "
            "for the other for good")


class Context:
    """The :class:`~processor.tools.ToolContext` a tool gets; every progress report of a
    tool, FAST or COMPUTE, passes :func:`clean_fraction` here."""

    def __init__(self, job_id: str, data_dir: Path, report: ProgressFn,
                 resources: dict[str, Any], *,
                 abandoned: Callable[[], bool] = _never) -> None:
        self.job_id = job_id
        self.data_dir = data_dir
        self._report = report
        self._resources = resources
        self._abandoned = abandoned  # the run is over (FAST: timed out), the tool running

    def progress(self, fraction: float, message: str | None = "") -> None:
        # None is no message: shown as "None" it read as one (QA h380).
        text = "" if message is None else str(message)
        self._report(clean_fraction(fraction), valid_text(text[:PROGRESS_MESSAGE_CHARS]))

    def resource(self, key: str, factory: Callable[[], T]) -> T:
        resources = self._resources
        if key not in resources:
            if isinstance(resources, Resources):
                resources.make(key, factory, self._abandoned)
            else:
                resources[key] = factory()
        value: T = self._resources[key]
        return value


def validate_params(tool: type[BaseTool], params: dict[str, Any]) -> Any:
    """The tool's Params model for ``params``; InvalidParams names each bad field.

    ``params`` came from the job file, JSON: what Python-mode validation refuses is
    validated again as pydantic validates JSON, whose errors are then the ones said.  A
    strict field takes only its own Python type from a dict (a ``datetime``, a
    ``tuple``, an enum member, a ``UUID``), which no job file can hold, and from JSON
    what the params' JSON Schema asks for (the ISO string, the array, the value).  Params
    Python mode takes, nearly every job's, pay nothing more.
    """
    try:
        return tool.Params.model_validate(params)
    except ValidationError as exc:
        refused = exc
    try:  # the failing path only: json's check of NaN (orjson writes it as null)
        as_json = json.dumps(params, allow_nan=False)
    except (TypeError, ValueError):  # no JSON after all (a caller's own dict): its word
        raise InvalidParams(params_message(refused)) from None
    try:
        taken = tool.Params.model_validate_json(as_json)
    except ValidationError as exc:
        raise InvalidParams(params_message(exc)) from None
    if any(err["type"] == "extra_forbidden" for err in refused.errors()):
        # A param no strictness explains: JSON mode passes over a field's own name where
        # the field goes by an alias (pydantic 2.13), and the job ran on the default
        # ({"low": 5} for a field aliased "LOW": low=0, done), where Python mode refused.
        raise InvalidParams(params_message(refused, only="extra_forbidden"))
    return taken


def params_message(exc: ValidationError, only: str | None = None) -> str:
    """One line: each bad field (five at most) with pydantic's words, or a check's own.

    A validator's ``ValueError`` is said as it was raised, without pydantic's "Value
    error, " before it; one across fields (no location) names its fields itself, where
    "params: " stood before it.  ``only``: the errors of that type alone."""
    errors = [err for err in exc.errors() if only is None or err["type"] == only]
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err["loc"])
        own = err.get("ctx", {}).get("error") if err["type"] == "value_error" else None
        if own is None:
            parts.append(f"{where or 'params'}: {err['msg']}")
        else:
            parts.append(f"{where}: {own}" if where else str(own))
    more = len(errors) - 5
    return "; ".join(parts) + (f" (and {more} more)" if more > 0 else "")


def run_tool(tool: type[BaseTool], job_id: str, params: dict[str, Any], ctx: Context
             ) -> Outcome:
    """Validate, execute and encode one call; never raises for the tool's faults."""
    start, pid = time.perf_counter(), os.getpid()
    # numpy's floating-point error handling (np.seterr) is the thread's: a tool's
    # seterr(all="raise") would fail a later job of the thread that divides by zero.
    float_errors = _float_state()
    # What the tool prints is logged as this job's, where capture is installed (the
    # processor, for FAST tools); a COMPUTE worker's output goes to pipes instead
    # (processor.stdio_pipes), and begin and end were 2 to 3 us of each job's time there.
    captured = capture.installed()
    if captured:
        capture.begin(job_id, tool.name)
    try:
        outcome = _execute(tool, job_id, params, ctx)
    except JobError as exc:
        outcome = Outcome.failed(job_id, exc, _traceback(exc) if not
                                 isinstance(exc, InvalidParams) else None)
    except SystemExit as exc:  # sys.exit() or argparse in a tool ends the call, not the process
        if os.getpid() != pid:  # in a child the tool forked (see below), the child's status
            os._exit(exc.code if isinstance(exc.code, int) else int(exc.code is not None))
        outcome = Outcome(job_id, ErrorType.TOOL_ERROR,
                          f"the tool called exit ({_text_of(exc.code, repr)})", _traceback(exc))
    except BaseException as exc:  # asyncio's CancelledError too: a FAST tool runs on the loop
        outcome = raised(job_id, exc)
    if os.getpid() != pid:
        # A process the tool forked came back here instead of exiting: a copy of the
        # processor (or worker) that would record the job in place of its run and go on
        # as one (taking the pool's messages). It ends now, with nothing flushed.
        os._exit(0 if outcome.ok else 1)
    if captured:
        capture.end()
    _put_back_float_state(float_errors)
    outcome.duration_s = time.perf_counter() - start
    # The tool's text goes into a record as JSON, which cannot hold lone surrogates.
    if outcome.message:
        outcome.message = valid_text(outcome.message)
    if outcome.traceback:
        outcome.traceback = valid_text(outcome.traceback)
    return outcome


def _execute(tool: type[BaseTool], job_id: str, params: dict[str, Any], ctx: Context
             ) -> Outcome:
    model = validate_params(tool, params)
    result = tool().execute(model, ctx)
    if not isinstance(result, ToolResult):
        raise TypeError(f"{tool.name}.execute returned {type(result).__name__}, "
                        "not a ToolResult")
    if not result.is_ok:
        if not isinstance(result.error_message, str):
            raise TypeError(f"{tool.name}.execute returned ToolResult.error with a "
                            f"{type(result.error_message).__name__} for its message, not a str")
        # A record must say why: an empty message said nothing, and a value beside the
        # error was dropped without a word.
        message = result.error_message or "the tool failed with an empty error message"
        if result.value is not None:
            message += " (it also returned a value, which is not kept: a failed job has no result)"
        return Outcome(job_id, ErrorType.TOOL_ERROR, message,
                       retryable=_flag(result.retryable))
    return Outcome(job_id, result_json=result_json(result.value))


def result_json(value: Any) -> bytes:
    """A tool's result as JSON; TypeError saying why it is not JSON.

    Keys that are not strings (``{1: "a"}``) are written as their JSON text, once it is
    known that no two keys of one object come to the same text: ``{1: "a", "1": "b"}``
    was written with "1" twice, and every reader kept one of the two values unsaid.
    Tried without them first: most results have only string keys, which need no look.
    """
    try:
        try:
            return orjson.dumps(value, default=_numpy_view, option=STR_KEYS_OPTS)
        except TypeError as exc:
            if str(exc) != _NON_STR_KEY:
                raise
        encoded = orjson.dumps(value, default=_numpy_view, option=RESULT_OPTS)
    except TypeError as exc:
        why = str(exc)
        if why == "Recursion limit reached":  # orjson's words read as the tool's recursion
            why = "it is nested more than 254 levels deep, or holds itself"
        elif (where := _not_json_at(value, "result", 0,
                                    time.monotonic() + WHERE_BUDGET_S)) is not None:
            why = where
        raise TypeError(f"the result is not JSON: {why}") from None
    if (twice := _key_twice(value)) is not None:
        raise TypeError(f"the result is not JSON: two keys of one object are both "
                        f"{twice!r} in JSON")
    return encoded


WHERE_BUDGET_S = 0.5
"""How long :func:`_not_json_at` may look (then orjson's words are said): its cost is the
result's size times its depth, 8.6 s of the job's time for 40,000 ints at each of 250
levels (QA h399)."""


def _not_json_at(value: Any, path: str, depth: int, until: float) -> str | None:
    """What in ``value`` (named ``path``) is not JSON, and where: ``Type is not JSON
    serializable: Timestamp at result['rows'][3]['t']``, or a key's type, or a ``NaT``;
    None when nothing is found (the caller says orjson's words then).  Only a failed
    result is walked, into the first item that fails alone.  "Type is not JSON
    serializable: Timestamp" named no place in a result of many tables, and orjson's
    "unsupported numpy.datetime64 unit: NaT" (a missing time) and "Dict key must a type
    serializable with OPT_NON_STR_KEYS" (a numpy integer key) said nothing a tool's author
    could act on (QA h395).  None too once the monotonic clock passes ``until``."""
    if depth > _MAX_DEPTH or time.monotonic() > until:
        return None
    if isinstance(value, dict):
        return _not_json_in_dict(value, path, depth, until)
    if isinstance(value, list | tuple):
        return _not_json_in_list(value, path, depth, until)
    if _holds_nat(value):
        return (f"{path} is a numpy datetime64 that holds NaT (a missing time), which JSON "
                "cannot hold: write a missing time as None")
    try:
        orjson.dumps(value, default=_numpy_view, option=RESULT_OPTS)
    except TypeError as exc:
        return f"{exc} at {path}"
    return None


def _not_json_in_list(value: list[Any] | tuple[Any, ...], path: str, depth: int,
                      until: float) -> str | None:
    """:func:`_not_json_at` of a list: the first item that is not JSON."""
    for index, item in enumerate(value):
        if time.monotonic() > until:
            return None
        if not _is_json(item):
            return _not_json_at(item, f"{path}[{index}]", depth + 1, until)
    return None


def _not_json_in_dict(value: dict[Any, Any], path: str, depth: int, until: float
                      ) -> str | None:
    """:func:`_not_json_at` of a dict: a key of a type no JSON key is made of, or the
    first item that is not JSON."""
    for key, item in value.items():
        if time.monotonic() > until:
            return None
        if type(key) is not str and not _is_json(dict.fromkeys((key,))):
            return (f"a key of {path} is a {_type_name(key)} ({_short(key)}): a key must be "
                    "a str, int, float, bool, None, datetime, date, time, enum or UUID (a "
                    "numpy number: int(key) or float(key))")
        if not _is_json(item):
            return _not_json_at(item, f"{path}[{_short(key)}]", depth + 1, until)
    return None


def _holds_nat(value: Any) -> bool:
    """Whether ``value`` is a numpy datetime64 (scalar or array) holding NaT."""
    if getattr(getattr(value, "dtype", None), "kind", None) != "M":
        return False
    try:
        return bool(sys.modules["numpy"].isnat(value).any())
    except Exception:  # a subclass's own isnat: orjson's words are said then
        return False


def _is_json(value: Any) -> bool:
    try:
        orjson.dumps(value, default=_numpy_view, option=RESULT_OPTS)
    except TypeError:
        return False
    return True


def _type_name(value: Any) -> str:
    kind = type(value)
    return kind.__qualname__ if kind.__module__ == "builtins" else \
        f"{kind.__module__}.{kind.__qualname__}"


def _short(value: Any) -> str:
    return _text_of(value, repr)[:60]


def _key_twice(value: Any, depth: int = 0) -> str | None:
    """A key two keys of one object in ``value`` come to as JSON text, if any (only
    objects that have keys other than strings are looked at, as orjson writes them)."""
    if depth > _MAX_DEPTH:
        return None
    if isinstance(value, dict):
        if not all(type(key) is str for key in value) and len(orjson.loads(orjson.dumps(
                dict.fromkeys(value), option=RESULT_OPTS))) < len(value):  # keys met twice
            seen: set[str] = set()
            for key in value:
                text = key if type(key) is str else next(iter(orjson.loads(orjson.dumps(
                    {key: None}, default=_numpy_view, option=RESULT_OPTS))))
                if text in seen:
                    return text
                seen.add(text)
        children: Iterable[Any] = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        return None
    for child in children:
        if isinstance(child, dict | list | tuple) and (
                twice := _key_twice(child, depth + 1)) is not None:
            return twice
    return None


def out_of_memory(exc: MemoryError) -> str:
    """A MemoryError's message: what it said (numpy's "Unable to allocate 7.28 TiB for an
    array with shape ..." was left to the traceback), and the worker's cap where one is
    set (SPOOL_WORKER_MEMORY_MB was named for FAST tools, and without a cap)."""
    text = _text_of(exc)
    said = f"{OUT_OF_MEMORY} (MemoryError: {text})" if text else f"{OUT_OF_MEMORY} (MemoryError)"
    if WORKER_CAP_MB[0]:
        return f"{said}; this worker's address space is capped at {WORKER_CAP_MB[0]} MB " \
            "(SPOOL_WORKER_MEMORY_MB)"
    cap = resource.getrlimit(resource.RLIMIT_AS)[0]
    if cap == resource.RLIM_INFINITY:
        return said
    # Inherited (ulimit -v, a unit's LimitAS=): SPOOL_WORKER_MEMORY_MB plays no part.
    return f"{said}; this process's address space is limited to {cap >> 20} MB (RLIMIT_AS)"


def ran_out_of_memory(outcome: Outcome) -> bool:
    """Whether ``outcome`` is of a tool's MemoryError (:func:`out_of_memory`'s message), not
    a tool's own error that says "out of memory on the GPU" (its worker then retires)."""
    return outcome.error_type is ErrorType.TOOL_ERROR and (outcome.message or "").startswith(
        f"{OUT_OF_MEMORY} (MemoryError")


WORKER_CAP_MB = [0]
"""The cap a COMPUTE worker set on itself (SPOOL_WORKER_MEMORY_MB), 0 for none."""


def _float_state() -> tuple[Any, Any] | None:
    """This thread's numpy floating-point error state, or None before numpy is loaded.

    numpy 2 keeps it (``seterr``, ``seterrcall``, ``setbufsize``) in one object held by a
    context variable, which each of those calls replaces: the object itself is the
    state, read in 0.02 us, where ``geterr()`` builds a dict (1 us, twice a job).  A
    numpy without that variable: ``geterr()``'s dict.  A numpy that is still being
    imported (the processor imports it in the background once it is ready, see
    :class:`processor.startup.BackgroundImports`) has neither yet: not loaded.
    """
    var = getattr(sys.modules.get("numpy._core._ufunc_config"), "_extobj_contextvar", None)
    if isinstance(var, contextvars.ContextVar):
        return var, var.get()
    geterr = getattr(sys.modules.get("numpy"), "geterr", None)
    return None if geterr is None else (None, dict(geterr()))


_NUMPY_ERRORS = {"divide": "warn", "over": "warn", "under": "ignore", "invalid": "warn"}
"""numpy's floating-point error handling as an import of numpy sets it (``geterr()``)."""


def _fresh_float_state() -> tuple[Any, Any] | None:
    """The floating-point error state numpy is imported with, or None while numpy is not
    loaded: what a run that imported numpy itself (``SPOOL_PRELOAD_QUANT`` off) leaves its
    thread in.  Left as the run set it, a tool's ``seterr(all="raise")`` in the first quant
    job of a worker failed the next job that divided by zero."""
    if (state := _float_state()) is None:
        return None
    var = state[0]
    if var is not None:  # the variable's default, read in a context that never set it
        return var, contextvars.Context().run(var.get)
    return None, dict(_NUMPY_ERRORS)


def _put_back_float_state(saved: tuple[Any, Any] | None) -> None:
    """The thread's floating-point error state as :func:`_float_state` read it before a
    run (``saved``), or as numpy is imported with when the run imported it itself."""
    if saved is not None:
        _restore_float_state(saved)
    elif (fresh := _fresh_float_state()) is not None:
        _restore_float_state(fresh)


def _restore_float_state(state: tuple[Any, Any]) -> None:
    """Put back what :func:`_float_state` read, if the tool changed it."""
    var, saved = state
    if var is not None:
        if var.get() is not saved:
            var.set(saved)
    elif dict(sys.modules["numpy"].geterr()) != saved:
        sys.modules["numpy"].seterr(**saved)


def _numpy_view(value: Any) -> Any:
    """What orjson's numpy support refuses that is an array all the same: one that is a
    view of another (a column ``a[:, 1]``, a step ``a[::2]``, a transpose), not
    C-contiguous.  Anything else stays not JSON."""
    if type(value).__name__ == "ndarray" and type(value).__module__ == "numpy":
        return value.tolist()
    raise TypeError


def _flag(value: object) -> bool:
    """A tool's ``retryable``: True only when it is a bool (numpy's too) that is true;
    ``retryable="no"`` was retried, as anything truthy was (QA)."""
    if value is True:
        return True
    dtype = getattr(value, "dtype", None)  # a numpy bool (np.True_), a 0-d bool array
    return getattr(dtype, "kind", None) == "b" and getattr(value, "shape", None) == () \
        and bool(value)


def raised(job_id: str, exc: BaseException) -> Outcome:
    """The ``tool_error`` of a run that raised ``exc`` (no JobError, no SystemExit): its
    type and text, a MemoryError's said as out of memory, and its traceback."""
    message = (out_of_memory(exc) if isinstance(exc, MemoryError)
               else f"{type(exc).__name__}: {_text_of(exc)}")
    return Outcome(job_id, ErrorType.TOOL_ERROR, valid_text(message),
                   valid_text(_traceback(exc)))


def _text_of(value: object, show: Callable[[object], str] = str) -> str:
    """``str(value)`` (or ``show``), or a note when the tool's own ``__str__`` raises: the
    record must say something either way.  Whatever it raises: a KeyboardInterrupt out
    of it crashed the processor (a FAST tool's, exit 130) or its worker (``worker_crashed``,
    retried), where an ordinary error's was the job's ``tool_error``."""
    try:
        return show(value)
    except BaseException:
        return f"<{type(value).__name__} whose {show.__name__}() raised>"


def _traceback(exc: BaseException) -> str:
    """The formatted traceback, its middle cut when it is too long: the head names where
    it was raised (a huge message would otherwise push out every frame), the tail what."""
    return cut_text("".join(traceback.format_exception(exc)), MAX_TRACEBACK_CHARS)


def timed_out_itself(timeout_s: float, exitcode: int | None, ran_s: float) -> bool:
    """Whether a worker that died after ``ran_s`` of a job's ``timeout_s`` was ended by
    its own deadline (:class:`processor.worker.Deadman`)."""
    return exitcode == DEADMAN_EXIT and ran_s >= timeout_s


def how_it_ended(exitcode: int | None) -> str:
    """A dead process's exit code in words: 'exited with status 3', 'killed by signal SIGSEGV'."""
    if exitcode is None or exitcode >= 0:
        return f"exited with status {exitcode}"
    try:
        return f"killed by signal {signal.Signals(-exitcode).name}"
    except ValueError:
        return f"killed by signal {-exitcode}"


SIGKILLED_BY = "the OOM killer, or a kill from outside"
"""Who SIGKILLs a worker, as far as anyone can tell: said of a job's worker and of one
killed while it loaded its tools (:mod:`processor.pool`)."""


def death_outcome(task: Task, reason: str | None, exitcode: int | None, ran_s: float,
                  pid: int | None, *, ended: str | None = None,
                  loading: str | None = None) -> Outcome:
    """The outcome of a task whose worker died: killed at its deadline (or by its own
    deadman), killed by a cancel, or crashed (``ended``: how, where the exit code does
    not tell it; ``loading``: what the worker was still loading, its task's time not
    started: a deadline then is the load's, and said so, with the time waited)."""
    if loading is not None and reason == ErrorType.TIMEOUT.value:
        # Said "killed after 500 ms" of a job that waited 600.5 s and never ran.
        return Outcome(task.job_id, ErrorType.TIMEOUT,
                       f"killed: its worker had not loaded {loading} after "
                       f"{seconds_text(round(ran_s, 1))} (timeout)", retryable=True,
                       pid=pid or 0, duration_s=ran_s)
    if reason == ErrorType.TIMEOUT.value or timed_out_itself(task.timeout_s, exitcode, ran_s):
        return Outcome(task.job_id, ErrorType.TIMEOUT,
                       f"killed after {seconds_text(task.timeout_s)} (timeout)", retryable=True,
                       pid=pid or 0, duration_s=ran_s)
    if reason == ErrorType.CANCELLED.value:
        return Outcome(task.job_id, ErrorType.CANCELLED, "cancelled while running",
                       pid=pid or 0, duration_s=ran_s)
    how = ended or how_it_ended(exitcode)
    if ended is None and exitcode == -signal.SIGKILL:
        # As a worker killed while it loaded its tools is said (pool._unready_death): a
        # job past a container's or cgroup's memory limit read only "killed by signal
        # SIGKILL", where the usual killer is the kernel's (h408).
        how += f" ({SIGKILLED_BY})"
    return Outcome(task.job_id, ErrorType.WORKER_CRASHED, f"worker process {how}",
                   retryable=True, pid=pid or 0, duration_s=ran_s)
