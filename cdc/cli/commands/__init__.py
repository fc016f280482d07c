"""One module per `cdc` subcommand. Each defines ``register(app)``; cdc.cli finds them all."""
