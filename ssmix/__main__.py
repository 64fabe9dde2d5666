"""`python -m ssmix`: the same as the `ssmix` command."""

import sys

from ssmix.cli import main

sys.exit(main())
