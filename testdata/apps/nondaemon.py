"""An app that starts a non-daemon thread at import which never ends, so finalizing Python in
its worker blocks forever (threading._shutdown joins it)."""
import threading
import time


def _forever():
    while True:
        time.sleep(1)


threading.Thread(target=_forever, name="never-ends").start()


def application(environ, start_response):
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"ok"]
