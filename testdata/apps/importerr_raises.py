"""Raises RuntimeError at import time."""

raise RuntimeError("importerr_raises: this module refuses to be imported")
