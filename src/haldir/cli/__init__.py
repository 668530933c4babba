"""The `haldir` command line: operator commands on the configured store, client commands on a server."""
