"""``python -m sklearn_sparsegap`` runs the ``sparsegap`` command line."""

import sys

from .cli import main

sys.exit(main())
