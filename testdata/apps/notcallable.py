"""Exports an `application` that is not callable; gowsgi must refuse it."""

application = 42
