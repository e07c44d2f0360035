"""Params a tool takes by other names than its JSON Schema's are not refused (h337).

``POST /api/v1/tasks`` and ``spoolq submit`` refuse params a live processor's catalogue
says the tool lacks or does not take (ebb2a5d).  The schema names a field by its alias,
but a model with ``populate_by_name`` takes the field's name too, ``AliasChoices`` takes
several and a ``before`` validator may rename or fill in params: such jobs, which the
tool runs, were refused 400 ``invalid_params`` ("takes no param 'symbol_name' ... needs
'symbolName'").  The processor says in its catalogue whether the names are exact
(``params_by_name``); only then are jobs refused by them.
"""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import AliasChoices, BaseModel, ConfigDict, Field, RootModel, model_validator
from pydantic.json_schema import SkipJsonSchema
from statusdkit import TOKEN, FakeOwner, ServerThread, request

from processor.runner import validate_params
from processor.tools import BaseTool, params_by_name
from spool.states import JobState
from spool.transitions import Spool


class ByName(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)
    symbol_name: str = Field(alias="symbolName")


class Choices(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = Field(validation_alias=AliasChoices("seconds", "secs"))


class Renamed(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float

    @model_validator(mode="before")
    @classmethod
    def _old_name(cls, value: Any) -> Any:
        if isinstance(value, dict) and "secs" in value:
            value = {**value, "seconds": value["secs"]}
            del value["secs"]
        return value


class Unlisted(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float = 1.0
    debug: SkipJsonSchema[bool] = False


class Exact(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seconds: float
    note: str = Field("", alias="Note")


class Root(RootModel[Exact]):
    pass


def pending_ids(spool: Spool) -> list[str]:
    return sorted(p.stem for p in spool.layout.folder(JobState.PENDING).iterdir())


def _tool(name: str, params: type[BaseModel]) -> type[BaseTool]:
    return type(name, (BaseTool,), {"name": name, "Params": params})


@pytest.mark.parametrize(("params", "exact"), [
    (ByName, False), (Choices, False), (Renamed, False), (Root, False), (Unlisted, False),
    (Exact, True)])
def test_the_catalogue_says_whether_params_go_by_the_schemas_names(
        params: type[BaseModel], exact: bool) -> None:
    assert _tool("t", params).catalogue_entry()["params_by_name"] is exact
    assert params_by_name(params) is exact


@pytest.mark.parametrize(("params", "given"), [
    (ByName, {"symbol_name": "AAPL"}), (Choices, {"secs": 1}), (Renamed, {"secs": 1}),
    (Unlisted, {"debug": True})])
def test_params_the_tool_takes_by_other_names_are_taken(
        server: ServerThread, spool: Spool, params: type[BaseModel],
        given: dict[str, Any]) -> None:
    tool = _tool("renamed", params)
    validate_params(tool, given)  # the tool takes them
    owner = FakeOwner(spool, tools=[tool.catalogue_entry()])
    try:
        taken = request(server.base, "POST", "/api/v1/tasks",
                        {"tool": "renamed", "id": "taken", "params": given}, token=TOKEN)
        assert taken.status == 202, taken.body
        assert pending_ids(spool) == ["taken"]
    finally:
        owner.close()


def test_params_by_the_schemas_names_are_still_checked(server: ServerThread,
                                                       spool: Spool) -> None:
    owner = FakeOwner(spool, tools=[_tool("exact", Exact).catalogue_entry()])
    try:
        typo = request(server.base, "POST", "/api/v1/tasks",
                       {"tool": "exact", "id": "typo", "params": {"secnds": 1}}, token=TOKEN)
        assert typo.status == 400, typo.body
        assert typo.json()["error"]["type"] == "invalid_params"
        assert "takes no param 'secnds'" in typo.json()["error"]["message"]
    finally:
        owner.close()


def test_a_catalogue_that_does_not_say_is_not_held_against_the_job(
        server: ServerThread, spool: Spool) -> None:
    """A processor of before ``params_by_name``: its names may not be the tool's."""
    entry = _tool("renamed", ByName).catalogue_entry()
    del entry["params_by_name"]
    owner = FakeOwner(spool, tools=[entry])
    try:
        taken = request(server.base, "POST", "/api/v1/tasks",
                        {"tool": "renamed", "id": "taken",
                         "params": {"symbol_name": "AAPL"}}, token=TOKEN)
        assert taken.status == 202, taken.body
    finally:
        owner.close()
