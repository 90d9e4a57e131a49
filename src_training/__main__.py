"""``python -m src_training ...`` is the same as the ``lidnet`` command."""

import sys

from .cli import main

sys.exit(main())
