"""The built-in quant tools: OHLCV data, factors, backtests and factor analysis.

Modules, each owning one concern:

* :mod:`~processor.quant.data`: symbol names, CSV parsing, the parsed cache
  (:class:`~processor.quant.data.DataStore`) and the cross-sectional
  :class:`~processor.quant.data.Panel`.
* :mod:`~processor.quant.synth`: seeded synthetic OHLCV files.
* :mod:`~processor.quant.factors`: the factor catalogue.
* :mod:`~processor.quant.backtest`: ``run_backtest`` (``ma_crossover``): chunks of
  symbols, progress and the result; its parts are
  :mod:`~processor.quant.blocks` (row blocks and running values),
  :mod:`~processor.quant.crossover` (the signal, with
  :mod:`~processor.quant.exact_crossover` for its near ties) and
  :mod:`~processor.quant.simulation` (the account and the metrics).
* :mod:`~processor.quant.analysis`: ``analyze_factor``.
* :mod:`~processor.quant.jsonsafe`: undefined numbers become ``None``.
* :mod:`~processor.quant.params`: the tools' parameter models (no numpy, no pandas).
* :mod:`~processor.quant.kline`: ``get_kline``'s answer.
* :mod:`~processor.quant.tools`: the four tool classes, ``QUANT_TOOLS``.

Every definition follows ``QUANT.md`` to the letter; the computations are
vectorised over symbols and dates (numpy/pandas), never a Python loop over bars.
"""
