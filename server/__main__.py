"""`python -m server` is the `backdrop` command."""

import sys

from .cli import main

sys.exit(main())
