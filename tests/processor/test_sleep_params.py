"""The sleep tool's seconds must be a finite number, and says so."""

from __future__ import annotations

import pytest

from processor.builtin import Sleep
from processor.runner import validate_params
from spool.errors import InvalidParams


@pytest.mark.parametrize("seconds", [float("nan"), float("inf"), float("-inf")])
def test_a_seconds_that_is_no_finite_number_is_named_as_such(seconds: object) -> None:
    # NaN was reported as "should be less than or equal to 86400".
    with pytest.raises(InvalidParams) as info:
        validate_params(Sleep, {"seconds": seconds})
    assert "finite number" in info.value.message and "86400" not in info.value.message


@pytest.mark.parametrize("seconds", [True, "2", "NaN", "inf", None, [1]])
def test_a_seconds_that_is_no_json_number_is_refused(seconds: object) -> None:
    """The params schema says number: true slept 1 s and "2" slept 2 s (QA)."""
    with pytest.raises(InvalidParams) as info:
        validate_params(Sleep, {"seconds": seconds})
    assert "valid number" in info.value.message


def test_seconds_in_range_still_pass() -> None:
    assert validate_params(Sleep, {"seconds": 0.5}).seconds == 0.5
    assert validate_params(Sleep, {"seconds": 2}).seconds == 2.0
