"""The params a FAST tool gets are a copy: the run's record holds the job's own."""

from __future__ import annotations

from processor.starter import _copy_params


def test_scalar_params_are_a_new_dict() -> None:
    params = {"message": 5, "name": "x", "ratio": 0.5, "flag": True, "none": None}
    copied = _copy_params(params)
    assert copied == params and copied is not params
    copied["message"] = 6
    assert params["message"] == 5


def test_nested_params_are_copied_all_the_way_down() -> None:
    params = {"message": 5, "rows": [[1, 2], {"a": [3]}]}
    copied = _copy_params(params)
    assert copied == params
    copied["rows"][0].append(9)
    copied["rows"][1]["a"].clear()
    assert params == {"message": 5, "rows": [[1, 2], {"a": [3]}]}
