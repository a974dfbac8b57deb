"""The service's version string (one place; `main.py` and `/v2` report it)."""

VERSION = "0.1.0"
