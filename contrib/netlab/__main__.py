"""`python3 -m contrib.netlab ...` from the repository root."""

import sys

from contrib.netlab.cli import main

sys.exit(main())
