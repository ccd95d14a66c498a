"""The `qrt` command line."""
