"""The coordinator (DESIGN.md, "coordinator"): `node.run_coordinator` runs one node.

Nothing is imported here, so that the pure parts (`roster`, which `qrt.testing` shares) can be
used without starting Raft or ZeroMQ machinery.
"""
