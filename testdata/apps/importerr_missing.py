"""Fails at import: it imports a module that does not exist.

gowsgi must exit non-zero and print the traceback and a one-line reason."""

import gowsgi_testdata_no_such_module  # noqa: F401

application = None
