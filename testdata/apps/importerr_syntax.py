"""Fails at import with a SyntaxError (on purpose: do not fix the line below)."""


def application(environ, start_response)
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"unreachable"]
