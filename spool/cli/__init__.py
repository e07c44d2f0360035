"""The ``spoolq`` command line: ``main`` builds the parser from a table of commands.

``command`` (what a command is, exit codes), ``parse`` (what people type),
``render`` (what is printed), ``progress`` (``wait``'s bar); the commands live in
``admin`` (init, purge), ``submit``, ``jobs`` (show, wait, cancel, retry),
``overview`` (ls, stats), ``catalog`` (tools, schema, data) and ``demo``.

Every run of ``spoolq`` builds the whole parser, so the command modules import at
their top only what building it takes (argparse, :mod:`~spool.cli.parse`, the
layout, the states); each command imports the rest where it runs, so ``--help``
loads no record model, settings library or watchdog, ``ls``/``show``/``stats`` no
transitions or watchdog.  Those imports are marked ``noqa: PLC0415 - lazy``.
"""
