"""`python -m prober`: the same as the `prober` command."""
from .cli import run

run()
