"""``python -m lib.demo`` (what ``make demo`` runs): see :mod:`lib.demo.run`."""

import sys

from lib.demo.run import main

sys.exit(main())
