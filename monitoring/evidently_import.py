"""Import Evidently once, lazily, with its import-time warnings silenced.

Evidently 0.7.23 has string literals with invalid escapes (`"\\d"`), which Python
3.11 reports as SyntaxWarning each time it compiles them: always, where bytecode
is not cached (PYTHONDONTWRITEBYTECODE). Under warnings-as-errors (our tests) that
warning becomes a SyntaxError and the import fails. The modules the drift job
uses are therefore imported here, inside one `catch_warnings` block, once.
"""

from __future__ import annotations

import importlib
import threading
import warnings

MODULES = (
    "evidently",
    "evidently.core.report",
    "evidently.descriptors",
    "evidently.metrics",
    "evidently.presets",
    "evidently.sdk.models",
    "evidently.sdk.panels",
    "evidently.ui.workspace",
    "evidently.legacy.renderers.html_widgets",
)

_lock = threading.Lock()
_done = False


def import_evidently() -> None:
    """Import the Evidently modules the drift job needs (~4 s the first time)."""
    global _done
    if _done:
        return
    with _lock, warnings.catch_warnings():
        warnings.simplefilter("ignore", SyntaxWarning)
        warnings.simplefilter("ignore", DeprecationWarning)
        warnings.simplefilter("ignore", FutureWarning)
        for name in MODULES:
            importlib.import_module(name)
        _done = True
