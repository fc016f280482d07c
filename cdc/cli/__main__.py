"""`python -m cdc.cli`: the `cdc` command."""

from cdc.cli.root import main

main()
