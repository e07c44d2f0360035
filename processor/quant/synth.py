"""Seeded synthetic OHLCV files: geometric Brownian motion per symbol.

Guarantees: the same ``(symbols, bars, seed)`` writes the same bytes; every
row satisfies ``0 < low <= min(open, close) <= max(open, close) <= high``, and
every close is within :data:`PRICE_FLOOR` and :data:`PRICE_CEILING`;
timestamps are business days from 2010-01-04; prices have 4 decimals and
volumes are whole numbers.  Each file is written beside its final name and
renamed into place, so a reader never sees half a file.

Usage: ``python -m processor.quant.synth --symbols N --bars T --seed S --data-dir D``.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import tempfile
from pathlib import Path

import numpy as np
import pandas as pd

from processor.quant.bars import F64
from spool.fsops import make_dir
from spool.stdio import integer
from spool.view import others_may_change, pin_folder

FIRST_DAY = "2010-01-04"
PRICE_FLOOR = 0.01
PRICE_CEILING = 1e6
"""Where a close's walk turns back (:func:`_reflected`): a drift of up to 15 % a year
carried a million bars and more past 1e300, and the exponent to infinity."""
_HEADER = "timestamp,open,high,low,close,volume\n"
_ROW = "%s,%.4f,%.4f,%.4f,%.4f,%d\n"


def symbol_names(count: int) -> list[str]:
    """``S0000``, ``S0001``, ... (at least four digits)."""
    width = max(4, len(str(max(count - 1, 0))))
    return [f"S{i:0{width}d}" for i in range(count)]


def generate(symbols: int, bars: int, seed: int) -> dict[str, F64]:
    """Arrays of shape (bars, symbols) for open, high, low, close and volume."""
    rng = np.random.default_rng(seed)
    drift = rng.uniform(-0.05, 0.15, symbols) / 252
    vol = rng.uniform(0.15, 0.45, symbols) / np.sqrt(252)
    start = rng.uniform(20.0, 200.0, symbols)
    shocks = rng.standard_normal((bars, symbols))
    walk = np.log(start) + np.cumsum(drift - vol**2 / 2 + vol * shocks, axis=0)
    close = np.exp(_reflected(walk, np.log(PRICE_FLOOR), np.log(PRICE_CEILING)))
    prev_close = np.vstack([start, close[:-1]])
    gap = np.exp(0.2 * vol * rng.standard_normal((bars, symbols)))
    open_ = prev_close * gap
    wick_up = np.exp(0.5 * vol * np.abs(rng.standard_normal((bars, symbols))))
    wick_down = np.exp(-0.5 * vol * np.abs(rng.standard_normal((bars, symbols))))
    high = np.maximum(open_, close) * wick_up
    low = np.minimum(open_, close) * wick_down
    volume = np.round(rng.lognormal(np.log(1e6), 0.5, (bars, symbols)))
    # Rounding to 4 decimals and a floor are monotone, so the order of O/H/L/C holds.
    prices = {name: np.round(np.maximum(a, PRICE_FLOOR), 4)
              for name, a in (("open", open_), ("high", high), ("low", low), ("close", close))}
    return prices | {"volume": volume}


def _reflected(walk: F64, low: float, high: float) -> F64:
    """``walk`` folded back into ``[low, high]`` at each end, as a mirror does; a path
    that stays inside is unchanged."""
    span = high - low
    folded = np.mod(walk - low, 2 * span)
    return low + np.where(folded > span, 2 * span - folded, folded)


DATA_DIR_MODE = 0o755
DATA_FILE_MODE = 0o644


def write_synthetic(data_dir: Path | str, symbols: int, bars: int, seed: int) -> list[str]:
    """Write ``symbols`` files of ``bars`` rows into ``data_dir``; return the symbols."""
    if symbols < 1 or bars < 1:
        raise ValueError("symbols and bars must be at least 1")
    directory = Path(data_dir)
    made = not directory.is_dir()
    if made:
        make_dir(directory, DATA_DIR_MODE)  # its parents 0755 whatever the umask
    directory = _pinned(directory)
    if made:
        # Readable by the processor's user whatever the writer's umask: under 077, as
        # root, every job failed "PermissionError" on the files (QA).  Market data is
        # no secret; a folder of one's own keeps its mode.
        directory.chmod(DATA_DIR_MODE)
    arrays = generate(symbols, bars, seed)
    days = pd.bdate_range(FIRST_DAY, periods=bars).strftime("%Y-%m-%d").tolist()
    columns = [arrays[name].T.tolist() for name in ("open", "high", "low", "close")]
    volumes = arrays["volume"].astype(np.int64).T.tolist()
    names = symbol_names(symbols)
    for j, name in enumerate(names):
        rows = zip(days, *(column[j] for column in columns), volumes[j], strict=True)
        text = _HEADER + "".join(map(_ROW.__mod__, rows))
        _publish(directory, f"{name}.csv", text.encode("ascii"))
    return names


class UnsafeFolder(ValueError):
    """The data folder is a symlink (or no folder) where another user could have put it."""


def _pinned(directory: Path) -> Path:
    """``directory``; for root, where another user may write to its parent (the spool's
    ``data/``, the service user's), the same folder through a descriptor opened without
    following a link (see :mod:`spool.view`): that user's symlink at ``data`` had root
    write its CSV files into a root-only folder (h325).  The descriptor stays open for
    the process's life."""
    if os.geteuid() != 0:
        return directory
    parent = os.open(directory.parent, os.O_PATH | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        st = os.fstat(parent)
        if not others_may_change(st):
            return directory
        try:
            return Path(f"/proc/self/fd/{pin_folder(parent, directory.name)}")
        except OSError as exc:
            raise UnsafeFolder(
                f"{directory} is no folder root will write to ({exc.strerror}): uid "
                f"{st.st_uid} may write to {directory.parent} and could have put a "
                "symlink there; give the data folder's real path") from None
    finally:
        os.close(parent)


def _publish(directory: Path, name: str, data: bytes) -> None:
    """``data`` as ``directory/name``, by a rename from a new file of this process's:
    a fixed staging name was opened and chmodded through whatever another user of the
    folder put there first (run as root, a symlink had it overwrite and open up a
    root-only file: QA).  The rename replaces a link at ``name`` itself, never its
    target."""
    fd, staging = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            os.fchmod(fh.fileno(), DATA_FILE_MODE)
        os.replace(staging, directory / name)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(staging)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m processor.quant.synth",
                                     description="Write seeded synthetic OHLCV CSV files.")
    parser.add_argument("--symbols", type=integer, default=20, help="number of symbols")
    parser.add_argument("--bars", type=integer, default=2520, help="bars per symbol")
    parser.add_argument("--seed", type=integer, default=0, help="random seed")
    parser.add_argument("--data-dir", type=Path, required=True, help="output directory")
    args = parser.parse_args(argv)
    if args.symbols < 1 or args.bars < 1:
        parser.error("--symbols and --bars must be at least 1")
    try:
        names = write_synthetic(args.data_dir, args.symbols, args.bars, args.seed)
    except UnsafeFolder as exc:
        print(exc, file=sys.stderr)  # the last line: what `spoolq data synth` says
        return 1
    except OSError as exc:  # by its real name: root's pinned folder is /proc/self/fd/N
        print(f"cannot write the data files in {args.data_dir}: {exc.strerror}",
              file=sys.stderr)
        return 1
    print(f"wrote {len(names)} symbols x {args.bars} bars ({names[0]}..{names[-1]}) "
          f"to {args.data_dir}")
    if others := other_files(args.data_dir, names):
        print(others, file=sys.stderr)
    return 0


def other_files(data_dir: Path | str, names: list[str]) -> str | None:
    """A note on the CSV files in ``data_dir`` this run did not write (an earlier run's
    with more symbols, a user's own), or None: a tool that reads every symbol there
    (``analyze_factor`` without ``symbols``) mixed them in, unsaid (QA)."""
    written = {f"{name}.csv" for name in names}
    others = sorted(p.name for p in Path(data_dir).glob("*.csv") if p.name not in written)
    if not others:
        return None
    return (f"note: {len(others)} other CSV file(s) in {data_dir} were left as they were "
            f"({', '.join(others[:3])}{', ...' if len(others) > 3 else ''}); tools that read "
            "every symbol (analyze_factor without symbols) read them too")


if __name__ == "__main__":
    raise SystemExit(main())
