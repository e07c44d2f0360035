"""The params a tool's catalogue entry lists (``spoolq tools``, ``spool-processor tools``)."""

from __future__ import annotations

from pydantic import BaseModel

from spool.catalogue import param_names


class Node(BaseModel):
    """A tree: a model that holds itself, whose schema pydantic puts behind a ``$ref``."""

    name: str
    children: list[Node] = []


class Flat(BaseModel):
    symbol: str
    limit: int = 10


def test_a_model_that_holds_itself_lists_its_params() -> None:
    """Its schema is ``{"$ref": "#/$defs/Node", "$defs": ...}``: read at the top, the tool
    was listed as taking no params ("params: -")."""
    schema = Node.model_json_schema()
    assert "$ref" in schema and "properties" not in schema
    assert param_names(schema) == ["name*", "children"]
    assert param_names(schema, mark_required=False) == ["name", "children"]


def test_a_flat_model_and_odd_schemas() -> None:
    assert param_names(Flat.model_json_schema()) == ["symbol*", "limit"]
    assert param_names({}) == []
    assert param_names({"$ref": "#/$defs/Gone", "$defs": {}}) == []
    assert param_names({"properties": ["not", "a", "dict"]}) == []
    assert param_names({"properties": {"a": {}}, "required": "a"}) == ["a"]
