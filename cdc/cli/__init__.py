"""The `cdc` command: the Typer app (cdc.cli.root) and one module per subcommand in cdc.cli.commands,
each defining ``register(app)``. Commands parse arguments, call cdc.admin, cdc.runtime and the
role packages, and map errors to exit codes; nothing imports cdc.cli.
"""
