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


def test_a_flat_model_and_odd_schemas() -> None:
    assert param_names(Flat.model_json_schema()) == ["symbol*", "limit"]
    assert param_names({}) == []
    assert param_names({"$ref": "#/$defs/Gone", "$defs": {}}) == []
    assert param_names({"properties": ["not", "a", "dict"]}) == []
    assert param_names({"properties": {"a": {}}, "required": "a"}) == ["a"]


def test_a_number_given_for_text_behind_a_ref_is_known_as_text() -> None:
    """``spoolq submit -p symbol=600519`` keeps the text for a param taken as text; a str
    Enum's schema (and a model that holds itself) is behind a ``$ref``, and was read as
    taking no text: the job was sent the number, and failed invalid_params."""
    from enum import StrEnum  # noqa: PLC0415 - this test's own

    from spool.cli.parse import takes_text_not_numbers  # noqa: PLC0415

    class Ticker(StrEnum):
        MOUTAI = "600519"
        PING_AN = "000001"

    class Params(BaseModel):
        symbol: Ticker
        limit: int = 10

    schema = Params.model_json_schema()
    fields, defs = schema["properties"], schema.get("$defs")
    assert "$ref" in fields["symbol"]
    assert takes_text_not_numbers(fields["symbol"], defs)
    assert not takes_text_not_numbers(fields["limit"], defs)
    tree = Node.model_json_schema()
    node = tree["$defs"]["Node"]["properties"]
    assert takes_text_not_numbers(node["name"], tree["$defs"])


def test_true_false_and_null_for_a_text_param_stay_text() -> None:
    """``spoolq submit wordcount -p text=true`` sent JSON's true for a ``str`` param, and
    the job failed invalid_params ("Input should be a valid string"), where
    ``-p text=123`` was kept as text: every JSON scalar that is no string is, for a
    param taken as text only; a ``str | None`` param keeps ``null``, a ``bool`` one its
    ``true``."""
    import argparse  # noqa: PLC0415 - this test's own

    from spool.cli.parse import key_value  # noqa: PLC0415
    from spool.cli.submit import job_from_options  # noqa: PLC0415

    class Params(BaseModel):
        text: str
        note: str | None = None
        flag: bool = False

    schema = Params.model_json_schema()
    given = ["text=true", "note=null", "flag=true"]
    args = argparse.Namespace(tool="t", param=[key_value(g) for g in given], params=None,
                              priority=None, timeout=None, max_attempts=None,
                              not_before=None, meta=None)
    job = job_from_options(args, lambda tool: schema)
    assert job.params == {"text": "true", "note": None, "flag": True}
    args.param = [key_value(g) for g in ("text=null", "note=false", "text=1.5")]
    assert job_from_options(args, lambda tool: schema).params == {
        "text": "1.5", "note": "false"}
