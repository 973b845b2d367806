#!/usr/bin/env python3
"""claude-proxy: run ``python proxy.py`` to start the failover proxy.

``python proxy.py --help`` lists the commands.  The code lives in the
``claude_proxy`` package beside this file; this is only the entry point.
"""

import sys

if sys.version_info < (3, 10):
    sys.exit("claude-proxy needs Python 3.10 or newer; this is " + sys.version.split()[0])

from claude_proxy.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
