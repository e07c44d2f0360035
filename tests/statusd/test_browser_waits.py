"""The browser tests' ``wait_for_function`` conditions are functions, not expressions.

Playwright looks at a condition given as an expression again with an ``eval`` in the
page, which statusd's Content-Security-Policy refuses (``default-src 'self'``, no
``'unsafe-eval'``): such a wait passes only when its first look finds it true, and a
loaded host's first look that came early failed with an EvalError (QA h359).  A function
(``"() => ..."``) is looked at again without one.
"""

from __future__ import annotations

import ast
import re
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
# A function's text: an arrow function (its parameters: the wait's ``arg``), async or
# not, or a ``function``.
FUNCTION = re.compile(r"\s*(async\s+)?(\([\w\s,]*\)\s*=>|function\b)")


def _conditions() -> list[tuple[str, str]]:
    """(where, the condition's text) of every ``wait_for_function`` given a string."""
    found = []
    for path in sorted(TESTS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "wait_for_function" and node.args):
                text = node.args[0]
                if isinstance(text, ast.Constant) and isinstance(text.value, str):
                    found.append((f"{path.relative_to(TESTS)}:{node.lineno}", text.value))
                elif isinstance(text, ast.JoinedStr):
                    first = text.values[0] if text.values else None
                    found.append((f"{path.relative_to(TESTS)}:{node.lineno}",
                                  first.value if isinstance(first, ast.Constant) else ""))
    return found


def test_every_wait_for_function_is_given_a_function() -> None:
    conditions = _conditions()
    assert len(conditions) >= 10  # the search finds the suite's waits
    expressions = [where for where, text in conditions if not FUNCTION.match(text)]
    assert not expressions, f"give these a function, \"() => ...\": {expressions}"
