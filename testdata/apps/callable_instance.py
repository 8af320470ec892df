"""`application` is an instance of a class with __call__, not a function.

wsgiref.validate.validator returns a plain function, which would hide what is
tested here, so the instance delegates to a validated inner function instead."""

from wsgiref.validate import validator


class HelloApp:
    def __init__(self, greeting):
        self.greeting = greeting
        self._validated = validator(self._serve)

    def __call__(self, environ, start_response):
        return self._validated(environ, start_response)

    def _serve(self, environ, start_response):
        body = self.greeting.encode()
        start_response("200 OK", [("Content-Type", "text/plain"),
                                  ("Content-Length", str(len(body)))])
        return [body]


application = HelloApp("Hello from a callable instance")
