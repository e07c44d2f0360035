"""The ``spoolq`` command line: ``main`` builds the parser from a table of commands.

``command`` (what a command is, exit codes), ``parse`` (what people type),
``render`` (what is printed), ``progress`` (``wait``'s bar); the commands live in
``admin`` (init, purge), ``submit``, ``jobs`` (show, wait, cancel, retry),
``overview`` (ls, stats), ``catalog`` (tools, schema, data) and ``demo``.
"""
