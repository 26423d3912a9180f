"""The ``recon`` command: ``python -m recon`` and the installed script.

The command line is imported inside the guard, so that Ctrl-C while Python is
still loading recon is one line and exit status 130, like any other interrupt.
"""

import sys


def main() -> int:
    try:
        from recon.cli import main as command
    except KeyboardInterrupt:
        print("recon: interrupted", file=sys.stderr)
        return 130
    return command()


if __name__ == "__main__":
    sys.exit(main())
