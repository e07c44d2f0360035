"""The tool API: what a tool declares and what it gets while it runs.

A tool is a :class:`BaseTool` subclass with a ``name``, a ``category``
(``query`` or ``mutation``), an :class:`ExecutionMode`, a hard
``execution_timeout`` in seconds, a pydantic ``Params`` model and an
``execute(params, ctx)`` that returns a :class:`ToolResult`.  FAST tools run
in a processor thread and must stay light; COMPUTE tools run in a worker
process of the ``JOB_NUM`` pool.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Protocol, TypeVar

from pydantic import BaseModel, ConfigDict, RootModel

from spool.catalogue import own_object

T = TypeVar("T")

DEFAULT_FAST_TIMEOUT_S = 10.0
DEFAULT_COMPUTE_TIMEOUT_S = 3600.0


class ExecutionMode(StrEnum):
    FAST = "fast"
    COMPUTE = "compute"


@dataclass(frozen=True, slots=True)
class ToolResult:
    """What ``execute`` returns: a JSON-able value, or an error message."""

    value: Any = None
    error_message: str | None = None
    retryable: bool = False

    @classmethod
    def ok(cls, value: Any = None) -> ToolResult:
        return cls(value=value)

    @classmethod
    def error(cls, message: str, *, retryable: bool = False) -> ToolResult:
        if message is None:  # would read as a success (error_message None): fail loudly
            raise TypeError("ToolResult.error needs a message (a str), not None")
        return cls(error_message=message, retryable=retryable)

    @property
    def is_ok(self) -> bool:
        return self.error_message is None


class ToolContext(Protocol):
    """What a running tool may use: progress, its job id, data and cached resources."""

    job_id: str
    data_dir: Path

    def progress(self, fraction: float, message: str = "") -> None: ...

    def resource(self, key: str, factory: Callable[[], T]) -> T: ...


class NoParams(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BaseTool:
    """Base of every tool; subclasses set the class attributes and ``execute``."""

    name: ClassVar[str]
    category: ClassVar[str] = "query"
    execution_mode: ClassVar[ExecutionMode] = ExecutionMode.FAST
    execution_timeout: ClassVar[float] = DEFAULT_FAST_TIMEOUT_S
    max_attempts: ClassVar[int] = 1
    description: ClassVar[str] = ""
    Params: ClassVar[type[BaseModel]] = NoParams
    _default_timeout: ClassVar[bool] = False  # execution_timeout is the mode's default

    def __init_subclass__(cls, **kwargs: Any) -> None:
        """A tool that declares no ``execution_timeout`` (nor inherits one declared) gets
        its mode's default: 10 s FAST (DESIGN section 9), an hour COMPUTE.  Every tool had
        the FAST one: a backtest written without the attribute was killed at 10 s (QA)."""
        super().__init_subclass__(**kwargs)
        declared = any("execution_timeout" in vars(base)
                       and not vars(base).get("_default_timeout", False)
                       for base in cls.__mro__ if base is not BaseTool)
        if not declared:
            cls.execution_timeout = (DEFAULT_COMPUTE_TIMEOUT_S
                                     if cls.execution_mode == ExecutionMode.COMPUTE
                                     else DEFAULT_FAST_TIMEOUT_S)
            cls._default_timeout = True

    def execute(self, params: Any, ctx: ToolContext) -> ToolResult:
        raise NotImplementedError

    @classmethod
    def catalogue_entry(cls) -> dict[str, Any]:
        """Name, mode, timeout and params schema, as published in the status file."""
        schema = cls.Params.model_json_schema()
        return {
            "name": cls.name,
            "category": cls.category,
            "execution_mode": cls.execution_mode.value,
            "execution_timeout": cls.execution_timeout,
            "max_attempts": cls.max_attempts,
            "description": cls.description or _docstring(cls).strip().split("\n")[0],
            "params_schema": schema,
            "params_by_name": params_by_name(cls.Params, schema),
        }


def _docstring(cls: type[BaseTool]) -> str:
    """The tool's docstring, else the nearest one a tool it subclasses has (a class's
    ``__doc__`` is not inherited: a tool made from a built-in by a new name listed no
    description; QA h380), never BaseTool's own."""
    return next((base.__doc__ for base in cls.__mro__
                 if base.__doc__ and base is not BaseTool and issubclass(base, BaseTool)), "")


def params_by_name(model: type[BaseModel], schema: dict[str, Any] | None = None) -> bool:
    """Whether ``model`` takes a params object by exactly the names its JSON Schema gives
    (``properties``, ``required``): what lets ``spoolq submit`` and ``POST /api/v1/tasks``
    refuse a job by its params' names (:func:`spool.stats.unfit_params`).  Not so for a
    root model, a ``before``/``wrap`` model validator (which may rename or fill in params),
    a field taken by another name than the schema's (``populate_by_name`` or
    ``validate_by_name`` beside an alias, ``validate_by_alias=False``), or by several
    (``AliasChoices``, ``AliasPath``), nor a field the schema leaves out
    (``SkipJsonSchema``): such jobs were refused though the tool took them.  ``schema``:
    the model's JSON Schema, when made already."""
    if not isinstance(model, type) or not issubclass(model, BaseModel) \
            or issubclass(model, RootModel):
        return False
    validators = model.__pydantic_decorators__.model_validators.values()
    if any(getattr(v.info, "mode", None) in ("before", "wrap") for v in validators):
        return False
    if schema is None:
        schema = model.model_json_schema()
    named = own_object(schema).get("properties")  # (a model that holds itself: in $defs)
    if not isinstance(named, dict):
        return False
    config = model.model_config
    by_name = bool(config.get("validate_by_name") or config.get("populate_by_name"))
    by_alias = config.get("validate_by_alias", True) is not False
    for name, info in model.model_fields.items():
        alias = info.validation_alias if info.validation_alias is not None else info.alias
        if alias is not None and alias != name and (
                not isinstance(alias, str) or by_name or not by_alias):
            return False
        if (alias if isinstance(alias, str) else name) not in named:
            return False
    return True
