"""`python -m prober`: the same as the `prober` command."""
import sys

from .cli import main

sys.exit(main())
