"""The `portero` command: Typer + Rich, talking to the running instance over its API."""
