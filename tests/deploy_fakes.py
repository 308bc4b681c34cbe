"""Small fake user services for the deploy tests: stdlib http.server scripts with a start.sh.

``write_service(folder)`` writes ``server.py`` and ``start.sh``. The server listens on $PORT and
answers ``GET /`` with JSON naming its instance and the content of ``VERSION`` (read at start),
``GET /healthz`` with 200. Behaviour knobs, by environment: ``FAKE_EXIT=N`` exits with N at once,
``FAKE_DELAY=S`` sleeps S seconds before listening, ``FAKE_UNREADY=1`` answers /healthz 503,
``FAKE_CRASH_AFTER=S`` exits 1 after S seconds of serving, ``FAKE_SELF_REGISTER=S`` registers
itself through the Polaris HTTP API S seconds after it listens (a ``register: self`` service),
``FAKE_LATENCY=S`` answers ``GET /`` after S seconds, ``FAKE_ERROR_RATE=F`` answers that share of
``GET /`` with 500 (a slow or broken new version in a release test).
"""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

SERVER = textwrap.dedent(
    '''
    import json, os, random, sys, threading, time
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
    from pathlib import Path

    print("fake service starting", os.environ.get("DEVBOX_INSTANCE_ID"), flush=True)
    if os.environ.get("FAKE_EXIT"):
        print("fake service: exiting on purpose", flush=True)
        sys.exit(int(os.environ["FAKE_EXIT"]))
    time.sleep(float(os.environ.get("FAKE_DELAY", "0")))
    version_file = Path(__file__).with_name("VERSION")
    VERSION = version_file.read_text().strip() if version_file.exists() else "0"
    UNREADY = bool(os.environ.get("FAKE_UNREADY"))
    LATENCY = float(os.environ.get("FAKE_LATENCY", "0"))
    ERROR_RATE = float(os.environ.get("FAKE_ERROR_RATE", "0"))

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_GET(self):
            if self.path == "/healthz":
                code, body = (503, b"starting") if UNREADY else (200, b"ok")
            else:
                time.sleep(LATENCY)
                code = 500 if random.random() < ERROR_RATE else 200
                body = json.dumps({"instance": os.environ.get("DEVBOX_INSTANCE_ID"),
                                   "version": VERSION, "port": os.environ.get("PORT"),
                                   "tags": os.environ.get("DEVBOX_TAGS", "")}).encode()
            self.send_response(code)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", int(os.environ["PORT"])), Handler)
    server.daemon_threads = True
    if os.environ.get("FAKE_CRASH_AFTER"):
        threading.Timer(float(os.environ["FAKE_CRASH_AFTER"]), lambda: os._exit(1)).start()
    print("fake service listening on", os.environ["PORT"], "version", VERSION, flush=True)
    if os.environ.get("FAKE_SELF_REGISTER"):  # as a Polaris SDK would, a little after start
        import urllib.request
        time.sleep(float(os.environ["FAKE_SELF_REGISTER"]))
        body = json.dumps({"service": os.environ["DEVBOX_SERVICE"], "namespace": os.environ["DEVBOX_NAMESPACE"],
                           "host": "127.0.0.1", "port": int(os.environ["PORT"])}).encode()
        request = urllib.request.Request(os.environ["DEVBOX_NAMING_HTTP"] + "/v1/RegisterInstance", data=body,
                                         headers={"Content-Type": "application/json"})
        print("self-registered:", urllib.request.urlopen(request).read().decode(), flush=True)
    server.serve_forever()
    '''
)


def write_service(folder: Path, *, version: str = "1") -> Path:
    """Write the fake service into ``folder`` (created); returns the folder."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "server.py").write_text(SERVER)
    (folder / "VERSION").write_text(version + "\n")
    start = folder / "start.sh"
    start.write_text(f"#!/bin/sh\nexec {sys.executable} server.py\n")
    start.chmod(0o755)
    return folder
