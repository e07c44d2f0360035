"""The quant tools' parameter models: all the registry and the status file need of them.

The registry publishes each tool's ``Params`` JSON Schema, and a processor
loads it at start-up; the computations (numpy, pandas: some 300 ms of imports)
are the tools' business once they run, so nothing here imports them.

Guarantees: numbers are JSON numbers (a bool or a string is a params error);
``start`` and ``end`` are ISO 8601 (a number is a params error, not seconds since
1970); a symbol is an id (``^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$``, matched
in full); ``start`` after ``end`` is a params error; the models forbid unknown
fields.
"""

from __future__ import annotations

import re
import sys
from datetime import datetime, timedelta
from typing import Annotated, Any, Literal, Self, TypeGuard

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StrictInt,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from spool.errors import InvalidParams

SYMBOL_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"
_SYMBOL = re.compile(SYMBOL_PATTERN)  # fullmatch: the anchors take no trailing newline


def is_symbol(value: object) -> TypeGuard[str]:
    """``value`` is a symbol id (:data:`SYMBOL_PATTERN`): its data file's name, no path."""
    return isinstance(value, str) and _SYMBOL.fullmatch(value) is not None


def not_a_symbol(value: object) -> str:
    """What is said of a ``value`` that is no symbol id: the value and the rule."""
    return (f"{value!r} is not a symbol id (A-Z, a-z, 0-9 and ._-, at most 64, starting "
            "with a letter or digit)")


def _symbol_said(value: object) -> object:
    """Refuse text that is no symbol id in words that give it: pydantic's own were
    "symbols.0: String should match pattern '^[A-Za-z0-9]...$'" for ``symbols=../x``,
    naming neither the value nor what a symbol may be (QA h372).  Anything else is left
    to the type's own check (and its words)."""
    if isinstance(value, str) and not is_symbol(value):
        raise ValueError(not_a_symbol(value))
    return value


# For pydantic models: its regex engine anchors ``$`` at the very end of the text.  The
# pattern stays for the params' JSON Schema; the words are _symbol_said's.
Symbol = Annotated[str, StringConstraints(pattern=SYMBOL_PATTERN), BeforeValidator(_symbol_said)]
MAX_KLINE_ROWS = 1_000_000
MAX_SYMBOLS = 10_000
MAX_BACKTEST_BARS = 10_000_000
"""The bars of one ``run_backtest`` job, all symbols together (between ``start`` and
``end``): its record holds an equity curve point for each (about 45 bytes of JSON; the
worker needs some 250 bytes while it runs, and the processor holds the record too).
4,000 symbols x 10 years daily, or 10 x 1,000,000 minutes (a job at the bound needs
some 2.5 GB in its worker and makes a record of some 450 MB)."""
MAX_FACTOR_CELLS = 25_000_000
"""The panel of one ``analyze_factor`` job: dates (the symbols' timestamps outer-joined,
between ``start`` and ``end``) x symbols.  Some 110 bytes a cell while it runs (2.7 GB
at the bound): 10,000 symbols x 2,500 days, or 500 x 50,000 bars."""
MAX_WINDOW = 10_000_000
MAX_HORIZON = 10_000
Horizon = Annotated[int, Field(ge=1, le=MAX_HORIZON, strict=True)]
_NUMBER = re.compile(r"\s*[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?\s*")


_DATETIME = TypeAdapter(datetime)


def _iso_only(value: object) -> object:
    """Refuse a number, or a string of one: pydantic would read it as seconds since
    1970 (``start=2020`` as 1970-01-01T00:33:40), where QUANT.md's times are ISO 8601.
    Text that is no date or time gets the same words: pydantic's own were "start: Input
    should be a valid datetime or date, input is too short" for ``start=yesterday`` or
    ``start=2010-05``, naming neither the value nor the format wanted (QA).  Not "not
    ISO 8601": a year alone, a month or a week date are, and are refused (h374)."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.fullmatch(value)):
        raise _not_a_time(value)
    if isinstance(value, str):
        try:
            return _DATETIME.validate_python(value)
        except ValidationError:
            raise _not_a_time(value) from None
    return value


_DATE_FORM = re.compile(r"\d{4}-\d{2}-\d{2}([T ].*)?", re.DOTALL)


def _not_a_time(value: object) -> ValueError:
    # In ISO 8601's form but no such day or time ("2021-02-29", "2020-01-31T25:00"):
    # told "not a date spoolq reads (YYYY-MM-DD ...)" of a YYYY-MM-DD, a researcher
    # looked for a format fault that is not there (QA h375).
    if isinstance(value, str) and _DATE_FORM.fullmatch(value):
        try:
            datetime.fromisoformat(value)
        except ValueError as exc:
            if "range" in str(exc) or "must be in" in str(exc):
                return ValueError(f"{value!r} is no such date or time ({exc})")
    return ValueError(f"{value!r} is not a date or time spoolq reads (ISO 8601's "
                      "YYYY-MM-DD, with or without a time: 2020-01-31 or 2020-01-31T09:30:00Z)")


Bound = Annotated[datetime | None, BeforeValidator(_iso_only)]
"""``start`` or ``end``: ISO 8601 text (or a datetime); a bound without an offset is UTC."""


def check_order(start: datetime | None, end: datetime | None) -> None:
    """ValueError (a params error) when both bounds are given and ``start`` is after
    ``end``; a bound without an offset is UTC."""
    if start is None or end is None:
        return
    # start - offset > end - offset', rearranged so that no bound near year 1 or 9999
    # has to be moved across midnight (which would overflow a datetime).
    naive_gap = start.replace(tzinfo=None) - end.replace(tzinfo=None)
    if naive_gap > _offset(start) - _offset(end):
        raise ValueError(f"start ({start.isoformat()}) is after end ({end.isoformat()})")


def _offset(moment: datetime) -> timedelta:
    return moment.utcoffset() or timedelta(0)


def names_given(value: Any) -> Any:
    """Symbols as a list: a string is one name, or several between commas (no symbol has
    one): `spoolq submit ... -p symbols=A,B` failed "symbols.0: String should match
    pattern", naming neither the value nor the way to give a list (QA)."""
    if not isinstance(value, str):
        return value
    return [name.strip() for name in value.split(",")] if "," in value else [value]


class KlineParams(BaseModel):
    """Parameters of ``get_kline``."""

    model_config = ConfigDict(extra="forbid")

    symbol: Symbol
    start: Bound = Field(None, description="first bar (inclusive)")
    end: Bound = Field(None, description="last bar (inclusive)")
    limit: int | None = Field(None, ge=1, le=MAX_KLINE_ROWS, strict=True, description=(
        "at most this many bars: the first ones from start when only start is "
        "given, else the most recent ones; without it, every bar between start "
        f"and end, which must then be at most {MAX_KLINE_ROWS}"))

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        check_order(self.start, self.end)
        return self


class BacktestParams(BaseModel):
    """Parameters of ``run_backtest``."""

    model_config = ConfigDict(extra="forbid")

    symbols: list[Symbol] = Field(min_length=1, max_length=MAX_SYMBOLS, description=(
        f"one name, or a list; at most {MAX_BACKTEST_BARS:,} bars in all between start and "
        "end (each is a point of an equity curve in the record): split larger runs over "
        "several jobs"))
    strategy: Literal["ma_crossover"] = "ma_crossover"
    fast: int = Field(10, ge=1, le=MAX_WINDOW, strict=True, description="fast SMA window, bars")
    slow: int = Field(50, ge=2, le=MAX_WINDOW, strict=True, description="slow SMA window, bars")
    # Strict: lax validation would take true as 1.0 and "0.01" as 0.01 (whole numbers pass).
    fee: float = Field(0.001, ge=0, lt=1, allow_inf_nan=False, strict=True,
                     description="fraction of notional per fill")
    slippage: float = Field(0.0, ge=0, lt=1, allow_inf_nan=False, strict=True,
                          description="fraction of the open price")
    init_cash: float = Field(100_000.0, gt=0, allow_inf_nan=False, strict=True)
    periods_per_year: float = Field(252, gt=0, allow_inf_nan=False, strict=True)
    start: Bound = Field(None, description="first bar (inclusive)")
    end: Bound = Field(None, description="last bar (inclusive)")

    @field_validator("symbols", mode="before")
    @classmethod
    def _one_name(cls, value: Any) -> Any:
        # QUANT.md: "one or many".  `spoolq submit run_backtest -p symbols=S0000` failed
        # "symbols: Input should be a valid array" (QA).
        return names_given(value)

    @field_validator("symbols")
    @classmethod
    def _unique(cls, symbols: list[str]) -> list[str]:
        if len(set(symbols)) != len(symbols):
            raise ValueError("symbols must not repeat")
        return symbols

    @field_validator("init_cash")
    @classmethod
    def _normal(cls, cash: float) -> float:
        # A subnormal cash has too few digits to account with (5e-324 lost it all).
        if cash < sys.float_info.min:
            raise ValueError(f"init_cash must be at least {sys.float_info.min!r}, "
                             "the smallest normal float")
        return cash

    @model_validator(mode="after")
    def _windows(self) -> Self:
        if not 1 <= self.fast < self.slow:
            raise ValueError(f"fast ({self.fast}) must be less than slow ({self.slow})")
        check_order(self.start, self.end)
        return self


class FactorParams(BaseModel):
    """Parameters of ``analyze_factor``."""

    model_config = ConfigDict(extra="forbid")

    factor: str = Field("momentum", description="a name from list_factors")
    # Strict: lax validation would turn true into 1 before the factor's own checks.
    factor_params: dict[str, StrictInt] = Field(default_factory=dict)
    lookback: StrictInt | None = Field(None, ge=1,
                                       description="shorthand for factor_params.lookback")
    symbols: list[Symbol] | None = Field(None, min_length=1, description=(
        "default: all; their timestamps outer-joined between start and end make at "
        f"most {MAX_FACTOR_CELLS:,} cells (dates x symbols)"))
    horizons: list[Horizon] = Field(
        default_factory=lambda: [1, 5, 10], min_length=1, max_length=50,
        description=("forward-return horizons, bars; for h > 1 the daily ICs overlap, "
                     "so t_stat = ir * sqrt(n) overstates significance"))
    quantiles: int = Field(5, ge=2, le=100, strict=True)
    turnover_lags: list[Horizon] | None = Field(None, min_length=1, max_length=50,
                                                description="default: the horizons")
    start: Bound = None
    end: Bound = None

    @field_validator("symbols", mode="before")
    @classmethod
    def _names(cls, value: Any) -> Any:
        return names_given(value)

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        for name in ("symbols", "horizons", "turnover_lags"):
            values = getattr(self, name)
            if values is not None and len(set(values)) != len(values):
                raise ValueError(f"{name} must not repeat")
        check_order(self.start, self.end)
        return self

    def given_factor_params(self) -> dict[str, int]:
        """``factor_params`` with ``lookback`` merged in (a conflict is InvalidParams)."""
        given = dict(self.factor_params)
        if self.lookback is not None:
            if given.get("lookback", self.lookback) != self.lookback:
                raise InvalidParams("lookback and factor_params.lookback disagree")
            given["lookback"] = self.lookback
        return given
