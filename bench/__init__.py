"""`python -m bench`: the benchmark of the service (not a test; see bench/__main__.py)."""
