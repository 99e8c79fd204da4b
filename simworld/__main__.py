"""`python -m simworld` and the `simworld` command.

The interrupt handlers go in before the command line loads, so a Ctrl-C in the first moments of a
command (while numpy, numba and the rest import) stops it cleanly too.
"""

from __future__ import annotations

import sys
from typing import Any


def main() -> Any:
    from simworld import interrupts

    interrupts.install()
    try:
        from simworld.cli import main as cli_main

        return cli_main()
    except KeyboardInterrupt:  # (cli_main reports its own; this is one that came before or after it)
        sys.stderr.write("Interrupted.\n")
        sys.exit(130)
    finally:
        interrupts.uninstall()


if __name__ == "__main__":
    main()
