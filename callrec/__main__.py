"""``python -m callrec``: the ``callrec`` command where no console script is installed
(the container image runs the service from its source tree, as a PaaS build does)."""

import sys

from callrec.cli import main

sys.exit(main())
