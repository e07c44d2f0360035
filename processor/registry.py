"""Which tools a processor offers: built-ins, entry points, ``SPOOL_TOOLS`` modules.

A job names a registered tool; it can never name code to import.  Entry
points of group ``spoolq.tools`` may name a module (every ``BaseTool``
subclass defined in it with a ``name`` is registered) or a class.  A later
source may not silently shadow an earlier one: a duplicate name is an error
at start-up, so an operator sees the clash instead of a surprise.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import math
import os
import site
import sysconfig
import traceback
from collections.abc import Iterable
from importlib.metadata import EntryPoint, entry_points
from types import ModuleType
from typing import Any, TypeGuard

import orjson
from pydantic import BaseModel

from processor.builtin import BUILTIN_TOOLS
from processor.quant.tools import QUANT_TOOLS
from processor.tools import BaseTool, ExecutionMode
from spool.errors import ConfigError, UnknownTool
from spool.models import MAX_ATTEMPTS_LIMIT, MAX_TOOL_NAME

ENTRY_POINT_GROUP = "spoolq.tools"

SHIPPED_TOOLS: tuple[type[BaseTool], ...] = (*BUILTIN_TOOLS, *QUANT_TOOLS)
"""The tools spoolq ships: every registry's first, their names no other tool's."""


class Registry:
    """Tool classes by name, with their catalogue (each entry made once, as its tool is
    added: the params' JSON Schema is what start-up checks, and it never changes)."""

    def __init__(self, tools: Iterable[type[BaseTool]] = ()) -> None:
        self._tools: dict[str, type[BaseTool]] = {}
        self._entries: dict[str, dict[str, Any]] = {}
        for tool in tools:
            self.add(tool)

    def add(self, tool: type[BaseTool]) -> None:
        name = getattr(tool, "name", None)
        if name is None or name == "":
            raise ConfigError(f"tool class {tool.__qualname__} has no name")
        if not isinstance(name, str):  # said "has no name" of name = 42 (QA)
            raise ConfigError(f"tool class {tool.__qualname__}: its name must be a str, "
                              f"not {type(name).__name__}")
        if len(name) > MAX_TOOL_NAME:  # registered, it failed each job naming it invalid_job
            raise ConfigError(f"tool name {name[:40]!r}... ({_where(tool)}) is longer than "
                              f"{MAX_TOOL_NAME} characters: no job can name it")
        if not name.isprintable():  # a newline, an escape, a zero-width space: a lookalike
            raise ConfigError(f"tool name {name!r} ({_where(tool)}) has characters that are "
                              "not printable")
        if name != name.strip():  # " echo" was listed beside echo, the two alike (QA)
            raise ConfigError(f"tool name {name!r} ({_where(tool)}) starts or ends with "
                              "a space: a lookalike of another name")
        entry = ("it defines no execute(params, ctx)"  # each job failed NotImplementedError
                 if getattr(tool, "execute", None) is BaseTool.execute else _catalogue_entry(tool))
        if isinstance(entry, str):
            raise ConfigError(f"tool {name!r} ({_where(tool)}): {entry}")
        known = self._tools.get(name)
        if known is not None and known is not tool:
            raise ConfigError(f"two tools named {name!r}: {_where(known)} and {_where(tool)}"
                              f"{_builtin_hint(name, known)}")
        self._tools[name] = tool
        self._entries[name] = entry

    def get(self, name: str) -> type[BaseTool]:
        try:
            return self._tools[name]
        except KeyError:
            raise UnknownTool(f"unknown tool {name!r}; known: "
                              f"{', '.join(sorted(self._tools))}") from None

    def __contains__(self, name: str) -> bool:
        return name in self._tools

    def names(self) -> list[str]:
        return sorted(self._tools)

    def params_digest(self, name: str) -> str:
        """A digest of what tool ``name``'s params JSON Schema takes (KeyError if none):
        what a worker compares with the processor's (:attr:`WorkerConfig.params
        <processor.executor.WorkerConfig.params>`).  Of the schema made
        :func:`comparable`: taken whole, a ``Literal`` of a set's members (their order
        each process's hash seed) or a default computed at import (``datetime.now()``)
        gave every worker another digest than the processor's (h330)."""
        schema = orjson.dumps(comparable(self._entries[name]["params_schema"]),
                              option=orjson.OPT_SORT_KEYS)
        return hashlib.blake2b(schema, digest_size=8).hexdigest()

    def params_digests(self) -> tuple[tuple[str, str], ...]:
        """Each tool's :meth:`params_digest`, by name."""
        return tuple((name, self.params_digest(name)) for name in self.names())

    def catalogue(self) -> list[dict[str, Any]]:
        """Each tool's :meth:`~processor.tools.BaseTool.catalogue_entry`, by name (the
        registry's own dicts: read them, do not change them)."""
        return [self._entries[n] for n in self.names()]


_WORDS = frozenset({"default", "examples", "title", "description"})
"""Schema keywords that say nothing of which params are taken."""
_SETS = frozenset({"enum", "required", "type"})
"""Schema keywords whose lists are sets: their order says nothing either."""
_NAMED = frozenset({"properties", "patternProperties", "$defs", "definitions"})
"""Schema keywords whose value maps names (a param may be named ``title``) to schemas."""


def comparable(schema: Any) -> Any:
    """``schema`` without what may differ between two processes importing one module: its
    defaults, examples, titles and descriptions, and the order of its ``enum``,
    ``required`` and ``type`` lists."""
    if isinstance(schema, list):
        return [comparable(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    out: dict[str, Any] = {}
    for key, value in schema.items():
        if key in _WORDS:
            continue
        if key in _NAMED and isinstance(value, dict):
            out[key] = {name: comparable(item) for name, item in value.items()}
        elif key in _SETS and isinstance(value, list):
            out[key] = sorted(value, key=_json_order)
        else:
            out[key] = comparable(value)
    return out


def _json_order(item: Any) -> bytes:
    return orjson.dumps(item, option=orjson.OPT_SORT_KEYS)


def load_registry(modules: Iterable[str] = (), *, use_entry_points: bool = True) -> Registry:
    """Built-ins, then entry points, then ``modules``; ConfigError when one fails."""
    registry = Registry(list(SHIPPED_TOOLS))
    if use_entry_points:
        for ep in entry_points(group=ENTRY_POINT_GROUP):
            try:
                target = ep.load()
            except BaseException as exc:  # a module's own KeyboardInterrupt too
                raise ConfigError(f"entry point {_entry_point(ep)} failed to load: "
                                  f"{_failure(exc)}") from exc
            found = _tools_in(target)
            if not found:
                raise ConfigError(f"entry point {_entry_point(ep)} names no BaseTool "
                                  "with a name")
            for tool in found:
                registry.add(tool)
    for name in modules:
        try:
            module = importlib.import_module(name)
        except BaseException as exc:  # a module's own KeyboardInterrupt too
            raise ConfigError(f"SPOOL_TOOLS module {name!r} failed to import: "
                              f"{_failure(exc)}{_not_found_hint(name, exc)}") from exc
        found = _tools_in(module)
        if not found:
            raise ConfigError(f"SPOOL_TOOLS module {name!r} defines no BaseTool with a name")
        for tool in found:
            registry.add(tool)
    return registry


def _builtin_hint(name: str, known: type[BaseTool]) -> str:
    """What to do when a tool takes a built-in tool's name: the built-in cannot give way
    (jobs and the dashboard rely on it).  "two tools named 'echo': processor.builtin.Echo
    and mytools.MyEcho" left the reader to tell which one was the built-in (QA h395)."""
    if known not in SHIPPED_TOOLS:
        return ""
    return f" ({name!r} is a built-in tool's name: give the other tool a name of its own)"


def _entry_point(ep: EntryPoint) -> str:
    """An entry point as its errors name it: its name, what it names, and the package that
    declares it (``pip uninstall`` or fix it), where known.  Named by "badmod
    (h395bad.tols)" alone, the package was left to find among every one installed (QA
    h395)."""
    dist = getattr(ep, "dist", None)
    meta = getattr(dist, "metadata", None)
    package = meta.get("Name") if meta is not None else None
    if not package:
        return f"{ep.name} ({ep.value})"
    return f"{ep.name} ({ep.value}, of package {package} {getattr(dist, 'version', '')})"


def _not_found_hint(name: str, exc: BaseException) -> str:
    """What to do when the module named is not found itself (not one it imports): a
    newcomer's module beside them in the working directory, or a file path given."""
    missing = getattr(exc, "name", None) if isinstance(exc, ModuleNotFoundError) else None
    if not missing or not (name == missing or name.startswith(missing + ".")):
        return ""
    if "/" in name or name.endswith(".py"):
        return " (SPOOL_TOOLS takes module names, such as mytools, not file paths)"
    return (" (a module is found on PYTHONPATH or in this venv, not in the working "
            "directory: export PYTHONPATH=/folder/of/the/module, or pip install it)")


def _failure(exc: BaseException) -> str:
    """Why an import failed; a module that calls exit as it is imported (argparse at the
    top level) must not stop the processor, with exit 0 and no word, nor one that raises
    KeyboardInterrupt or asyncio's CancelledError (BaseExceptions: a traceback and exit
    1 or 130, restarted every 2 s for ever; a real Ctrl-C at start-up is noted by the
    early stop handlers, never raised).  A message that cannot be made is named."""
    if isinstance(exc, SystemExit):
        return f"it called exit ({exc.code!r})"
    try:
        text = str(exc)
    except BaseException:  # its own __str__ raised
        text = ""
    if isinstance(exc, ImportError) and text:  # "No module named 'x'" says what itself
        return text + _raised_at(exc)
    said = f"{type(exc).__name__}: {text}" if text else type(exc).__name__
    return said + _raised_at(exc) if isinstance(exc, Exception) else said


def _raised_at(exc: BaseException) -> str:
    """Where in the tool's code an import failed, `` (at FILE:LINE)``: the deepest frame
    of the traceback outside the standard library and the installed packages (else the
    deepest outside the standard library), empty when there is none (a module that is not
    found, a syntax error, whose text says where).  "index 5 is out of bounds for axis 0
    with size 3" named neither the error nor the line that raised it (QA h395)."""
    # (the first frame is the caller's, which caught it: the import, not the tool's)
    frames = [f for f in traceback.extract_tb(exc.__traceback__)[1:]
              if f.filename and not f.filename.startswith("<")
              and _IMPORT_MACHINERY not in f.filename]
    installed = [f for f in frames if _under(f.filename, _INSTALLED)]
    own = [f for f in frames if f not in installed and not _under(f.filename, _STDLIB)]
    if own:
        frame = own[-1]
    elif installed:
        # An installed tool (an entry point's always is): the deepest frame of its own
        # package, the first installed one imported, not pandas' line it called (QA h399).
        home = _installed_home(installed[0].filename)
        frame = [f for f in installed if f.filename.startswith(home)][-1]
    else:
        return ""
    return f" (at {frame.filename}:{frame.lineno})"


_IMPORT_MACHINERY = os.sep + os.path.join("importlib_metadata", "")
"""The backport of ``importlib.metadata``, installed with other packages: once something
imported it, its finder on ``sys.meta_path`` makes every entry point its own, whose
``load()`` frame is the import's, no tool's (a missing module was said "(at
.../site-packages/importlib_metadata/__init__.py:271)", in the full suite only)."""


def _installed_home(filename: str) -> str:
    """The package folder (with its separator) or the single module file that installed
    ``filename`` belongs to: ``.../site-packages/mytools/``."""
    for folder in sorted((f for f in _INSTALLED if filename.startswith(f)), key=len,
                         reverse=True):
        top, sep, _ = filename[len(folder):].partition(os.sep)
        return folder + top + sep
    return filename


def _under(filename: str, folders: tuple[str, ...]) -> bool:
    return any(filename.startswith(folder) for folder in folders)


_STDLIB = tuple(sorted({os.path.join(sysconfig.get_path(k), "") for k in ("stdlib", "platstdlib")}))
"""The standard library's folders (importlib's own frames are frozen, ``<frozen ...>``)."""
_INSTALLED = tuple(sorted({os.path.join(p, "") for p in (
    *site.getsitepackages(), site.getusersitepackages(),
    sysconfig.get_path("purelib"), sysconfig.get_path("platlib"))}))
"""Where installed packages live (numpy raising for a tool is the tool's line, not
numpy's): site-packages, this venv's and the system's."""


def _tools_in(target: object) -> list[type[BaseTool]]:
    if inspect.isclass(target) and _is_tool(target):
        return [target]
    found: list[type[BaseTool]] = []
    if isinstance(target, ModuleType):
        # Defined in the module or a submodule of its package (a package that re-exports
        # its tools), never one it imported from elsewhere (which would register twice).
        name = target.__name__
        for obj in vars(target).values():
            if (inspect.isclass(obj) and _is_tool(obj)
                    and (obj.__module__ == name or obj.__module__.startswith(name + "."))):
                found.append(obj)
    return found


def _catalogue_entry(tool: type[BaseTool]) -> dict[str, Any] | str:
    """The tool's catalogue entry, or what is wrong with its class attributes (checked
    at start-up, not when its first job fails, or when the catalogue is written to the
    status file)."""
    problem = _declaration_problem(tool)
    if problem is not None:
        return problem
    try:
        entry = tool.catalogue_entry()
    except Exception as exc:  # e.g. a field of a type pydantic cannot describe
        first = str(exc).strip().split("\n")[0]
        return f"Params has no JSON Schema: {first or type(exc).__name__}"
    try:
        # What the status file (and ``tools --json``) writes: an integer past 64 bits in
        # the schema (a bound ``lt=2**64``, a default) crashed the processor there.
        orjson.dumps(entry)
    except TypeError as exc:
        return f"its params schema cannot be written as JSON: {exc}"
    return entry


def _declaration_problem(tool: type[BaseTool]) -> str | None:
    params = getattr(tool, "Params", None)
    if not (inspect.isclass(params) and issubclass(params, BaseModel)):
        return "Params must be a pydantic BaseModel subclass"
    if not isinstance(getattr(tool, "execution_mode", None), ExecutionMode):
        return "execution_mode must be ExecutionMode.FAST or ExecutionMode.COMPUTE"
    timeout = getattr(tool, "execution_timeout", None)
    if (not isinstance(timeout, int | float) or isinstance(timeout, bool)
            or not 0 < timeout < math.inf):
        return f"execution_timeout must be a finite number of seconds above 0, not {timeout!r}"
    attempts = getattr(tool, "max_attempts", None)
    if (not isinstance(attempts, int) or isinstance(attempts, bool)
            or not 1 <= attempts <= MAX_ATTEMPTS_LIMIT):
        return (f"max_attempts must be a whole number from 1 to {MAX_ATTEMPTS_LIMIT}, "
                f"not {attempts!r}")
    for attr in ("category", "description"):
        if not isinstance(getattr(tool, attr, None), str):
            return f"{attr} must be a str, not {type(getattr(tool, attr, None)).__name__}"
    return _behaviour_problem(tool)


def _behaviour_problem(tool: type[BaseTool]) -> str | None:
    """Each of these was taken at start, and then failed every job, or listed a category
    the API documents as "query or mutation" (QA)."""
    if tool.category not in CATEGORIES:
        return f"category must be 'query' or 'mutation', not {tool.category!r}"
    execute = inspect.getattr_static(tool, "execute", None)
    if isinstance(execute, staticmethod | classmethod):
        execute = execute.__func__
    if not callable(execute) and not hasattr(type(execute), "__get__"):
        # (a descriptor: functools.partialmethod, singledispatchmethod, a decorator's
        # object, is not callable itself but gives a method)
        return f"execute must be a method execute(self, params, ctx), not {execute!r}"
    if inspect.iscoroutinefunction(execute) or inspect.isasyncgenfunction(execute):
        return ("execute must be a plain method, not async: nothing awaits it (each job "
                "would fail with a coroutine for its result)")
    return None


CATEGORIES = frozenset({"query", "mutation"})
"""A tool's ``category``, as DESIGN section 4 and the API's schema say."""


def _is_tool(obj: type) -> TypeGuard[type[BaseTool]]:
    return issubclass(obj, BaseTool) and obj is not BaseTool and "name" in _own_attrs(obj)


def _own_attrs(cls: type) -> set[str]:
    return {k for c in cls.__mro__ if c is not BaseTool for k in vars(c)}


def _where(tool: type[BaseTool]) -> str:
    return f"{tool.__module__}.{tool.__qualname__}"
