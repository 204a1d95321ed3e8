"""``python -m clients.cli``: the ``notice`` command."""

import sys

from clients.cli import main

sys.exit(main())
