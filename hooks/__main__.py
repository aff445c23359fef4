"""`python -m hooks`: see hooks/cli.py."""

import sys

from hooks.cli import main

sys.exit(main())
