"""Custom-container test server: echoes the invocation so tests can check what reached the instance."""
import json
import os
import signal
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

ENV_KEYS = ("FC_FUNCTION_NAME", "FC_FUNCTION_HANDLER", "FC_FUNCTION_MEMORY_SIZE", "FC_TIMEOUT", "FC_RUNTIME",
            "FC_REGION", "FC_ACCOUNT_ID", "FC_INSTANCE_ID", "FC_SERVER_PORT", "FC_CUSTOM_LISTEN_PORT")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True

    def log_message(self, *args):
        pass

    def _send(self, status, body, content_type="application/json"):
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_POST(self):
        event = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        if self.path.split("?")[0] != "/invoke":
            return self._send(404, b"not found\n", "text/plain")
        request_id = self.headers.get("x-fc-request-id", "")
        print("echo-container got %s" % request_id, flush=True)
        body = {"container": True, "event": event.decode("utf-8", "replace"), "requestId": request_id,
                "env": {k: os.environ[k] for k in ENV_KEYS if k in os.environ}}
        self._send(200, json.dumps(body).encode())

    def do_GET(self):
        self._send(200, b"ok\n", "text/plain")  # any path, so it can serve as a healthCheckConfig target


if __name__ == "__main__":
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))  # PID 1 ignores SIGTERM unless handled
    port = int(os.environ.get("FC_SERVER_PORT") or os.environ.get("FC_CUSTOM_LISTEN_PORT") or 9000)
    ThreadingHTTPServer(("0.0.0.0", port), Handler).serve_forever()
