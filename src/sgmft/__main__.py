"""`python -m sgmft ...`: the command line (also what `torchrun -m sgmft train` runs)."""

from sgmft.cli import main

main()
