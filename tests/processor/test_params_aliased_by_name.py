"""A param given by a field's own name where the field goes by an alias (h337).

Python-mode validation refuses ``{"low": 5}`` for a field aliased ``LOW`` of a model
that forbids extra params; :func:`validate_params` then tries JSON mode (for strict
fields), where pydantic passes over the key without a word: the job ran, done, on the
field's default (low=0).  It is refused ``invalid_params``, naming the param.
"""

from __future__ import annotations

from datetime import datetime

import pytest
from pydantic import BaseModel, ConfigDict, Field

from processor.runner import validate_params
from processor.tools import BaseTool
from spool.errors import InvalidParams


class Aliased(BaseModel):
    model_config = ConfigDict(extra="forbid")
    low: int = Field(0, alias="LOW")


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True)
    at: datetime
    low: int = Field(0, alias="LOW")


def _tool(params: type[BaseModel]) -> type[BaseTool]:
    return type("T", (BaseTool,), {"name": "t", "Params": params})


def test_a_fields_own_name_is_no_param_of_an_aliased_field() -> None:
    with pytest.raises(InvalidParams, match=r"^low: Extra inputs are not permitted$"):
        validate_params(_tool(Aliased), {"low": 5})
    assert validate_params(_tool(Aliased), {"LOW": 5}).low == 5


def test_a_strict_field_still_takes_its_json_form() -> None:
    """What JSON mode is for: a strict datetime from its ISO text."""
    got = validate_params(_tool(Strict), {"at": "2026-01-02T03:04:05Z", "LOW": 2})
    assert (got.at.year, got.low) == (2026, 2)
    with pytest.raises(InvalidParams, match=r"^low: Extra inputs are not permitted$"):
        validate_params(_tool(Strict), {"at": "2026-01-02T03:04:05Z", "low": 2})
