"""`python -m textcl` (also what `accelerate launch -m textcl` runs)."""

import sys

from textcl.cli import main

sys.exit(main())
