"""Fail when a pip install log shows a package built from source (anything but the project itself).

    python scripts/check_pip_log.py .venv/pip-install.log

scripts/setup.sh runs it after every install: the set-up must take minutes, not a compile, so a dependency that
loses its wheel (or a new one without any) is caught at once instead of silently costing many minutes.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

#: What pip writes when it builds a distribution, with the distribution's name in group 1.
BUILD_LINES = (
    re.compile(r"Building wheel for (\S+) \("),
    re.compile(r"Running setup\.py install for (\S+)"),
    re.compile(r"Building editable for (\S+) \("),
)
OWN = {"qkrag"}


def built_from_source(log: str) -> list[str]:
    """Distributions that the log shows pip building, other than qkrag itself, in order and without repeats."""
    found: list[str] = []
    for line in log.splitlines():
        for pattern in BUILD_LINES:
            match = pattern.search(line)
            if match and match.group(1).lower() not in OWN and match.group(1) not in found:
                found.append(match.group(1))
    return found


def main(argv: list[str]) -> int:
    if len(argv) != 1:
        print("usage: check_pip_log.py PIP_LOG", file=sys.stderr)
        return 2
    built = built_from_source(Path(argv[0]).read_text(encoding="utf-8", errors="replace"))
    if built:
        print(f"error: pip compiled {', '.join(built)} from source during set-up; pin a version with a wheel for "
              "this platform, or drop the package", file=sys.stderr)
        return 1
    print("set-up check: every package came as a prebuilt wheel")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
