"""Tool declarations are checked when a processor starts, not when a job first fails."""

from __future__ import annotations

import functools
import math
import os
import sys
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel, ConfigDict

from processor import registry as registry_module
from processor.registry import Registry, load_registry
from processor.tools import BaseTool, ExecutionMode, ToolContext, ToolResult
from spool.errors import ConfigError


class NoParams(BaseModel):
    pass


class Opaque:
    pass


class Unschematic(BaseModel):
    """A field pydantic can check but not describe: the processor crashed at start
    (with a traceback, exit 1) making the catalogue."""

    model_config = ConfigDict(arbitrary_types_allowed=True)

    thing: Opaque | None = None


def tool_class(**attrs: Any) -> type[BaseTool]:
    def execute(self: BaseTool, params: BaseModel, ctx: ToolContext) -> ToolResult:
        return ToolResult.ok()

    body = {"name": "t", "execution_mode": ExecutionMode.FAST, "Params": NoParams,
            "execution_timeout": 5.0, "execute": execute, **attrs}
    return type("T", (BaseTool,), body)


async def _async_execute(self: BaseTool, params: Any, ctx: Any) -> ToolResult:
    return ToolResult.ok(None)


@pytest.mark.parametrize(("attrs", "says"), [
    ({"Params": dict}, "Params must be a pydantic BaseModel"),
    ({"execution_mode": "fast"}, "execution_mode must be"),
    ({"execution_timeout": 0}, "execution_timeout must be"),
    ({"execution_timeout": -5}, "execution_timeout must be"),
    ({"execution_timeout": math.inf}, "execution_timeout must be"),
    ({"execution_timeout": True}, "execution_timeout must be"),
    ({"execution_timeout": math.nan}, "execution_timeout must be"),
    # These reached the status file: 10**30 made the processor crash at start (orjson).
    ({"max_attempts": 10**30}, "max_attempts must be"),
    ({"max_attempts": 0}, "max_attempts must be"),
    ({"max_attempts": "3"}, "max_attempts must be"),
    ({"category": {"query"}}, "category must be a str"),
    ({"description": object()}, "description must be a str"),
    ({"Params": Unschematic}, "Params has no JSON Schema: Cannot generate a JsonSchema"),
    ({"name": "ctl\x1b[31mred"}, "not printable"),
    ({"name": "two\nlines"}, "not printable"),
    ({"name": "run_backtest\u200b"}, "not printable"),
    ({"name": "t" * 129}, "longer than 128 characters: no job can name it"),
    # Listed beside echo, alike; and a tool whose every job failed NotImplementedError (QA).
    ({"name": " echo"}, "starts or ends with a space"),
    ({"name": "echo "}, "starts or ends with a space"),
    ({"execute": BaseTool.execute}, "it defines no execute"),
    # Taken at start, then every job failed, or a category outside the API's (QA).
    ({"category": "delete-everything"}, "category must be 'query' or 'mutation'"),
    ({"execute": 5}, "execute must be a method"),
    ({"execute": _async_execute}, "execute must be a plain method, not async"),
    ({"name": 42}, "its name must be a str, not int"),
])
def test_a_badly_declared_tool_is_refused_with_what_is_wrong(attrs: dict[str, Any],
                                                            says: str) -> None:
    with pytest.raises(ConfigError, match=says):
        Registry([tool_class(**attrs)])


def test_a_well_declared_tool_is_registered() -> None:
    assert Registry([tool_class()]).names() == ["t"]
    # A descriptor gives a method, callable or not itself (the session's own review).
    partial = functools.partialmethod(lambda self, params, ctx, how: ToolResult.ok(how),
                                      how="x")
    assert Registry([tool_class(name="p", execute=partial)]).names() == ["p"]
    assert Registry([tool_class(name="with space ünï 工具")]).names() == ["with space ünï 工具"]
    assert Registry([tool_class(name="t" * 128)]).names() == ["t" * 128]


def test_a_tool_without_a_timeout_of_its_own_gets_its_modes_default() -> None:
    """COMPUTE had the FAST 10 s: a backtest written without the attribute was killed at
    10 s (QA).  A timeout declared by a base class is inherited, whatever the mode."""
    compute = tool_class(execution_mode=ExecutionMode.COMPUTE, execution_timeout=None)
    assert compute.execution_timeout is None  # (type() put it in the body)
    body = {k: v for k, v in vars(tool_class(execution_mode=ExecutionMode.COMPUTE)).items()
            if k != "execution_timeout"}
    plain = type("C", (BaseTool,), body)
    assert plain.execution_timeout == 3600.0
    fast_child = type("F", (plain,), {"execution_mode": ExecutionMode.FAST})
    assert fast_child.execution_timeout == 10.0
    declared = type("D", (tool_class(execution_timeout=42.0),),
                    {"execution_mode": ExecutionMode.COMPUTE})
    assert declared.execution_timeout == 42.0
    assert Registry([plain]).catalogue()[0]["execution_timeout"] == 3600.0


def test_a_tool_made_from_another_by_a_new_name_keeps_its_description() -> None:
    """A class's ``__doc__`` is not inherited: a built-in subclassed under a new name
    listed an empty description (QA h380); a tool with no docstring anywhere has none,
    never BaseTool's own."""
    from processor.builtin import Echo  # noqa: PLC0415

    class Renamed(Echo):
        name = "t_renamed"

    class Bare(BaseTool):
        name = "t_bare"

    echoes = Echo.catalogue_entry()["description"]
    assert echoes and Renamed.catalogue_entry()["description"] == echoes
    assert Bare.catalogue_entry()["description"] == ""


def test_each_params_schema_is_made_once(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start-up checks each tool's params schema, and the status file publishes it:
    the second making (some 20 ms for the built-in and quant tools) came before READY."""
    made: list[str] = []
    real = BaseModel.model_json_schema.__func__  # type: ignore[attr-defined]

    def counted(cls: type[BaseModel], *args: Any, **kwargs: Any) -> dict[str, Any]:
        made.append(cls.__name__)
        schema: dict[str, Any] = real(cls, *args, **kwargs)
        return schema

    monkeypatch.setattr(BaseModel, "model_json_schema", classmethod(counted))
    registry = load_registry(use_entry_points=False)
    first = registry.catalogue()
    assert len(made) == len(registry.names()) == len(first)
    assert registry.catalogue() == first
    assert len(made) == len(registry.names())
    assert {e["name"]: e["params_schema"] for e in first}["sleep"]["properties"]["seconds"]


def test_a_package_that_re_exports_its_tools_registers_them(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch
                                                          ) -> None:
    package = tmp_path / "mytools"
    package.mkdir()
    (package / "__init__.py").write_text("from mytools.impl import Hello\n")
    (package / "impl.py").write_text(
        "from typing import ClassVar\n"
        "from pydantic import BaseModel\n"
        "from processor.tools import BaseTool, ExecutionMode, ToolResult\n"
        "from processor.builtin import Echo  # imported from elsewhere: not this package's\n"
        "class P(BaseModel):\n    pass\n"
        "class Hello(BaseTool):\n"
        "    name: ClassVar[str] = 'hello_pkg'\n"
        "    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST\n"
        "    Params: ClassVar[type[BaseModel]] = P\n"
        "    def execute(self, params, ctx):\n        return ToolResult.ok('hi')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry = load_registry(["mytools"], use_entry_points=False)
    finally:
        for name in ("mytools", "mytools.impl"):
            sys.modules.pop(name, None)
    assert "hello_pkg" in registry


@pytest.mark.parametrize(("code", "says"), [
    ("raise SystemExit(0)", "failed to import: it called exit \\(0\\)"),
    ("import sys; sys.exit('usage: mytool ...')",
     "failed to import: it called exit \\('usage: mytool ...'\\)"),
    # BaseExceptions of the module's own: a traceback and exit 130 or 1, restarted for
    # ever under Restart=on-failure, where operations.md promises one line and exit 2.
    ("raise KeyboardInterrupt", "failed to import: KeyboardInterrupt$"),
    ("import asyncio; raise asyncio.CancelledError('x')",
     "failed to import: CancelledError: x$"),
])
def test_a_tool_module_that_exits_as_it_is_imported_is_one_clear_error(
        code: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A script-like module (argparse or sys.exit at import) ended the processor at
    start: with exit 0 and no word, which Restart=on-failure takes for a clean stop."""
    (tmp_path / "exiting_tools.py").write_text(code + "\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=f"SPOOL_TOOLS module 'exiting_tools' {says}"):
            load_registry(["exiting_tools"], use_entry_points=False)
    finally:
        sys.modules.pop("exiting_tools", None)


@pytest.mark.parametrize(("name", "says"), [
    ("qa_h331_absent", "No module named 'qa_h331_absent' \\(a module is found on PYTHONPATH"),
    ("qa_h331_absent.py", "not file paths\\)$"),
    ("/srv/tools/qa_h331_absent.py", "not file paths\\)$"),
])
def test_a_tools_module_not_found_says_where_modules_are_looked_for(name: str,
                                                                     says: str) -> None:
    """A newcomer's module beside them (``SPOOL_TOOLS=mytools`` run from its folder) or a
    file path was refused with Python's bare "No module named ...": nothing said that
    the working directory is not searched, or that a module name is wanted."""
    with pytest.raises(ConfigError, match=says):
        load_registry([name], use_entry_points=False)


def test_a_tools_module_whose_own_import_is_missing_gets_no_hint(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "needs_a_dep.py").write_text("import qa_h331_not_installed\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        # No hint of PYTHONPATH (the module was found): the import's line instead.
        with pytest.raises(ConfigError, match=r"No module named 'qa_h331_not_installed' "
                                              r"\(at .*needs_a_dep\.py:1\)$"):
            load_registry(["needs_a_dep"], use_entry_points=False)
    finally:
        sys.modules.pop("needs_a_dep", None)


@pytest.mark.parametrize(("code", "says"), [
    ("import numpy\nfrom processor.tools import BaseTool\nX = numpy.zeros(3)[5]\n",
     r"IndexError: index 5 is out of bounds for axis 0 with size 3 "
     r"\(at .*raising_tools\.py:3\)$"),
    # Raised inside an installed package (pandas): the tool's line that called it.
    ("import pandas\n\nDATA = pandas.read_csv('/nonexistent/qa_h395/prices.csv')\n",
     r"FileNotFoundError: .*prices\.csv' \(at .*raising_tools\.py:3\)$"),
    # A syntax error's own text says where; nothing is added.
    ("def f(:\n    pass\n", r"SyntaxError: .*line 1\)$"),
])
def test_a_tool_module_that_raises_as_it_is_imported_names_the_error_and_its_line(
        code: str, says: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The line said only the exception's text ("index 5 is out of bounds for axis 0 with
    size 3"): neither its type nor the file and line of the module that raised it, and
    the processor prints no traceback, so the line was all there was (QA h395)."""
    (tmp_path / "raising_tools.py").write_text(code)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        with pytest.raises(ConfigError, match=f"SPOOL_TOOLS module 'raising_tools' failed to "
                                              f"import: {says}"):
            load_registry(["raising_tools"], use_entry_points=False)
    finally:
        sys.modules.pop("raising_tools", None)


@pytest.mark.parametrize("layout", ["module", "package"])
def test_an_installed_tool_module_raising_in_a_library_names_its_own_line(
        layout: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An installed tool (an entry point's always is, in site-packages, beside pandas)
    that raised inside pandas was said "(at .../site-packages/pandas/io/common.py:873)":
    the deepest installed frame, pandas' own, not the tool's line that called it, which
    a tool not installed is told (QA h399)."""
    site_dir = tmp_path / "site-packages"
    code = "import pandas\n\nDATA = pandas.read_csv('/nonexistent/qa_h399/prices.csv')\n"
    if layout == "module":
        site_dir.mkdir()
        (site_dir / "qa_h399_tools.py").write_text(code)
        name, where = "qa_h399_tools", r"qa_h399_tools\.py:3"
    else:
        (site_dir / "qa_h399_pkg").mkdir(parents=True)
        (site_dir / "qa_h399_pkg" / "__init__.py").write_text("")
        (site_dir / "qa_h399_pkg" / "tools.py").write_text(code)
        name, where = "qa_h399_pkg.tools", r"qa_h399_pkg/tools\.py:3"
    monkeypatch.syspath_prepend(str(site_dir))
    monkeypatch.setattr(registry_module, "_INSTALLED",
                        (*registry_module._INSTALLED, os.path.join(site_dir, "")))
    try:
        with pytest.raises(ConfigError, match=rf"FileNotFoundError: .*prices\.csv' "
                                              rf"\(at .*{where}\)$"):
            load_registry([name], use_entry_points=False)
    finally:
        for module in ("qa_h399_tools", "qa_h399_pkg", "qa_h399_pkg.tools"):
            sys.modules.pop(module, None)


@pytest.mark.parametrize("backport", [False, True])
def test_a_broken_entry_point_names_the_package_that_declares_it(
        backport: bool, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Any installed package can declare a ``spoolq.tools`` entry point, and a broken one
    stops the processor: the line named the entry point and its target only, leaving the
    package to find among all those installed (QA h395).  The same once the backport
    ``importlib_metadata`` (dask's) is imported, whose finder then gives every entry
    point: its ``load()``'s own line was named as where (the full suite, only in a worker
    that had run a Dask test first)."""
    if backport:
        pytest.importorskip("importlib_metadata")
    info = tmp_path / "qa_h395_broken-1.2.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: qa-h395-broken\n"
                                   "Version: 1.2\n")
    (info / "entry_points.txt").write_text("[spoolq.tools]\nbadmod = qa_h395_broken.tols\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(ConfigError, match=r"^entry point badmod \(qa_h395_broken\.tols, of "
                                          r"package qa-h395-broken 1\.2\) failed to load: "
                                          r"No module named 'qa_h395_broken'$"):
        load_registry()


def test_two_tools_of_one_name_are_refused_naming_both() -> None:
    """A tool that takes a built-in's name is told so, with what to do; two tools of the
    operator's own are named both, as they were (QA h395)."""
    echo = tool_class(name="echo")
    with pytest.raises(ConfigError, match=r"^two tools named 'echo': processor\.builtin\.Echo "
                                          r"and .* \('echo' is a built-in tool's name: give "
                                          r"the other tool a name of its own\)$"):
        Registry([*map((builtins := load_registry(use_entry_points=False)).get,
                       builtins.names()), echo])
    mine, again = tool_class(name="mine"), tool_class(name="mine")
    with pytest.raises(ConfigError, match=r"^two tools named 'mine': [\w.<>]+ and [\w.<>]+$"):
        Registry([mine, again])
