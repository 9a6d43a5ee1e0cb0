"""``python -m lamina.cli`` runs the ``lamina`` command."""

import sys

from lamina.cli import main

sys.exit(main())
