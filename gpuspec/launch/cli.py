"""``gpuspec-run``: run a production manifest (see docs/launch.md)."""

from __future__ import annotations

import sys


def main(argv=None) -> int:
    """Entry point of ``gpuspec-run``.

    The manifest-driven launcher is being built (issue: gpuspec-run). Until it
    lands this command says so and exits with status 2 rather than pretending.
    """
    print("gpuspec-run: the manifest launcher is not implemented yet; run the steps with "
          "'gpuspec <step>' (see 'gpuspec --help')", file=sys.stderr)
    return 2


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
