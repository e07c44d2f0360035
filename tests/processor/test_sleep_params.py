"""The sleep tool's seconds must be a finite number, and says so."""

from __future__ import annotations

import pytest

from processor.builtin import Sleep
from processor.runner import validate_params
from spool.errors import InvalidParams


@pytest.mark.parametrize("seconds", ["NaN", "nan", "inf", "-Infinity", float("nan")])
def test_a_seconds_that_is_no_finite_number_is_named_as_such(seconds: object) -> None:
    # NaN was reported as "should be less than or equal to 86400".
    with pytest.raises(InvalidParams) as info:
        validate_params(Sleep, {"seconds": seconds})
    assert "finite number" in info.value.message and "86400" not in info.value.message


def test_seconds_in_range_still_pass() -> None:
    assert validate_params(Sleep, {"seconds": 0.5}).seconds == 0.5
