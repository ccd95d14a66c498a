"""Fuzzing the coordinator's and the worker's sockets with frames built from the protocol's own
messages (tests/unit/test_protocol.py's round trips), mutated field by field and byte by byte."""
