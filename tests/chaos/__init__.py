"""The chaos harness: a seeded schedule of real faults under a steady load, and the checks that follow.

`python -m tests.chaos.harness --duration 600 [--seed N]` (`make chaos`) and a 60 s run in `make test`.
"""
