"""`make audit`: run pip-audit on the lock file and tell "no advisory service"
apart from "vulnerabilities found".

pip-audit asks PyPI (or OSV) about every locked package. Without that service it
stops at the first package with a traceback, having audited nothing, and an exit
status that reads like a finding. This wrapper says so in one line and exits
with `NO_ADVISORY_SERVICE` instead.

    python -m common.audit PIP_AUDIT_EXECUTABLE [pip-audit arguments...]
"""

from __future__ import annotations

import subprocess
import sys

NO_ADVISORY_SERVICE = 3
"""Exit status when nothing could be audited (pip-audit itself uses 0 and 1)."""

#: What requests / urllib3 say when the service cannot be reached.
_UNREACHABLE = (
    "ConnectionError",
    "ProxyError",
    "Max retries exceeded",
    "Failed to establish a new connection",
    "Temporary failure in name resolution",
    "Name or service not known",
    "ConnectTimeout",
)


def main(argv: list[str]) -> int:
    if not argv:
        print("usage: python -m common.audit PIP_AUDIT [ARGS...]", file=sys.stderr)
        return 2
    done = subprocess.run(argv, capture_output=True, text=True, check=False)
    if done.returncode != 0 and any(marker in done.stderr for marker in _UNREACHABLE):
        print(
            "audit not run: the advisory service (PyPI / OSV) could not be reached, "
            "so no package was checked; run make audit where it can be reached",
            file=sys.stderr,
        )
        return NO_ADVISORY_SERVICE
    sys.stdout.write(done.stdout)
    sys.stderr.write(done.stderr)
    return done.returncode


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
