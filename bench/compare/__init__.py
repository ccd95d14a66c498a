"""qrt against Celery and Dramatiq (`python -m bench.compare`; see __main__.py).

Modules that the peers' virtualenv imports too (stamps, workloads, driver, the peers' apps) use the
standard library and their own system only: never qrt.
"""
