"""Nubis python3 runtime: serves the instance contract (docs/contract.md) for `module.func` handlers."""
import datetime
import importlib
import json
import logging
import os
import signal
import sys
import threading
import traceback
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import SimpleNamespace

CODE_DIR = os.environ.get("FC_FUNC_CODE_PATH", "/code").rstrip("/") or "/"
# Replaces the bootstrap's own directory so user modules can never shadow or see it.
sys.path[0:1] = [CODE_DIR, CODE_DIR + "/python", "/opt/python"]

_local = threading.local()  # request id of the invocation running on this thread
_handlers = {}
_init_lock = threading.Lock()
_initialized = False
# A warm-pool cell starts with no function: it waits for the agent's one specialize call, which
# brings the function's environment (its code is linked into /code by then). The token proves
# the caller is the agent; it is removed from the environment before any user code runs.
_cell_token = os.environ.pop("NUBIS_CELL_TOKEN", "")
_cell_lock = threading.Lock()
_specialized = not _cell_token


class _Formatter(logging.Formatter):
    def format(self, record):
        ts = datetime.datetime.fromtimestamp(record.created, datetime.timezone.utc)
        stamp = ts.strftime("%Y-%m-%dT%H:%M:%S.") + "%03dZ" % (ts.microsecond // 1000)
        msg = record.getMessage()
        if record.exc_info:  # logger.exception() must keep its traceback
            msg += "\n" + self.formatException(record.exc_info)
        return "%s %s [%s] %s" % (stamp, getattr(_local, "request_id", ""), record.levelname, msg)


def _setup_logging():
    # The root logger, so plain logging.info() in user code carries the request id too.
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(_Formatter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.INFO)
    return root


LOGGER = _setup_logging()


def _say(line):
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _int(value):
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _make_context(h):
    env = os.environ.get

    def get(header, var=None):
        return h.get(header) or (env(var, "") if var else "")

    qualifier, version_id = get("x-fc-qualifier"), get("x-fc-version-id")
    return SimpleNamespace(
        request_id=get("x-fc-request-id"),
        function=SimpleNamespace(
            name=get("x-fc-function-name", "FC_FUNCTION_NAME"),
            handler=env("FC_FUNCTION_HANDLER") or get("x-fc-function-handler"),
            memory=_int(get("x-fc-function-memory", "FC_FUNCTION_MEMORY_SIZE")),
            timeout=_int(get("x-fc-function-timeout", "FC_TIMEOUT")),
            initializer=env("FC_INITIALIZER_HANDLER") or get("x-fc-function-initializer"),
            initialization_timeout=_int(get("x-fc-initialization-timeout", "FC_INITIALIZATION_TIMEOUT")),
            qualifier=qualifier,
            version_id=version_id,
        ),
        region=get("x-fc-region", "FC_REGION"),
        account_id=get("x-fc-account-id", "FC_ACCOUNT_ID"),
        credentials=SimpleNamespace(
            access_key_id=get("x-fc-access-key-id", "ALIBABA_CLOUD_ACCESS_KEY_ID"),
            access_key_secret=get("x-fc-access-key-secret", "ALIBABA_CLOUD_ACCESS_KEY_SECRET"),
            security_token=get("x-fc-security-token", "ALIBABA_CLOUD_SECURITY_TOKEN"),
        ),
        # FC 2.0 leftovers that ported code still reads.
        service=SimpleNamespace(name="", log_project="", log_store="", qualifier=qualifier, version_id=version_id),
        tracing=SimpleNamespace(span_context=None, jaeger_endpoint=None, span_baggages={}, parent_span_id=None),
        logger=LOGGER,
        get_logger=lambda: LOGGER,
    )


def _resolve(spec):
    fn = _handlers.get(spec)
    if fn is None:
        module_name, sep, attr = spec.rpartition(".")
        if not sep or not module_name or not attr:
            raise ValueError("Invalid handler '%s': expected module.function" % spec)
        module = importlib.import_module(module_name)
        fn = getattr(module, attr, None)
        if not callable(fn):
            raise AttributeError("Handler '%s' is missing or not callable in module '%s'" % (attr, module_name))
        _handlers[spec] = fn  # cached only on success, so a fixed import error is retried
    return fn


def _to_bytes(result):
    if result is None:
        return b""
    if isinstance(result, (bytes, bytearray, memoryview)):
        return bytes(result)
    if isinstance(result, str):
        return result.encode("utf-8")
    if isinstance(result, (dict, list, tuple, int, float, bool)):
        return json.dumps(result, ensure_ascii=False).encode("utf-8")
    return str(result).encode("utf-8")


_IMPORTLIB_DIR = os.path.dirname(importlib.__file__) + "/"


def _error_body(exc):
    # Frames of this file and of the import machinery are noise to the user.
    frames = [f for f in traceback.extract_tb(exc.__traceback__)
              if f.filename != __file__ and not f.filename.startswith(("<frozen ", _IMPORTLIB_DIR))]
    stack = traceback.format_list(frames)
    lines = ["Traceback (most recent call last):\n"] + stack + traceback.format_exception_only(type(exc), exc)
    sys.stderr.write("".join(lines))
    sys.stderr.flush()
    body = {"errorMessage": str(exc), "errorType": type(exc).__name__, "stackTrace": stack}
    return json.dumps(body, ensure_ascii=False).encode("utf-8")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive; every reply therefore carries Content-Length
    disable_nagle_algorithm = True  # headers and body are separate writes; avoid the 40 ms delayed-ACK stall

    def log_message(self, *args):
        pass  # access logs would pollute the function's log

    def _read_body(self):
        if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
            parts = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(parts)
                parts.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(_int(self.headers.get("Content-Length")))

    def _reply(self, status, body=b"", error=False, content_type="application/octet-stream"):
        self.send_response(status)
        self.send_header("Content-Type", "application/json" if error else content_type)
        self.send_header("Content-Length", str(len(body)))
        if error:
            self.send_header("x-fc-status", "404")
        self.end_headers()
        self.wfile.write(body)

    def _dispatch(self):
        event = self._read_body()
        path = self.path.split("?", 1)[0]
        if self.command == "POST" and path == "/nubis/specialize":
            self._specialize(event)
        elif not _specialized:
            self._reply(503, b"cell not specialized\n", content_type="text/plain")
        elif self.command == "POST" and path == "/invoke":
            self._invoke(event)
        elif self.command == "POST" and path == "/initialize":
            self._initialize()
        else:
            self._reply(404, b"not found\n", content_type="text/plain")

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _dispatch

    def _run(self, phase, call):
        headers = {k.lower(): v for k, v in self.headers.items()}
        ctx = _make_context(headers)
        _local.request_id = ctx.request_id
        start = "FC %s Start RequestId: %s" % (phase, ctx.request_id)
        # On both streams, like End: the agent attributes each pipe's lines by its own markers
        # (the pipes race each other, so a traceback can arrive before stdout's Start).
        sys.stderr.write(start + "\n")
        sys.stderr.flush()
        _say(start)
        try:
            return None, call(ctx)
        except BaseException as exc:  # SystemExit from user code must not kill the worker silently
            return _error_body(exc), None
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            end = "FC %s End RequestId: %s" % (phase, ctx.request_id)
            # On both streams: stdout and stderr are separate pipes, and the agent closes the
            # invocation's log record only when each has delivered its End (each pipe keeps order).
            sys.stderr.write(end + "\n")
            sys.stderr.flush()
            _say(end)
            _local.request_id = ""

    def _specialize(self, body):
        global _specialized
        with _cell_lock:  # at most once, and only by the agent
            if not _cell_token or _specialized:
                return self._reply(409, b"not a waiting cell\n", content_type="text/plain")
            if self.headers.get("x-nubis-cell-token", "") != _cell_token:
                return self._reply(403, b"bad cell token\n", content_type="text/plain")
            env = json.loads(body or b"{}").get("env", {})
            os.environ.update({str(k): str(v) for k, v in env.items()})
            # /code was empty when the import system first listed it.
            importlib.invalidate_caches()
            _specialized = True
        self._reply(200)

    def _invoke(self, event):
        def call(ctx):
            spec = ctx.function.handler
            return _to_bytes(_resolve(spec)(event, ctx))
        err, body = self._run("Invoke", call)
        self._reply(200, err or body, error=err is not None)

    def _initialize(self):
        global _initialized
        spec = os.environ.get("FC_INITIALIZER_HANDLER") or self.headers.get("x-fc-function-initializer", "")
        with _init_lock:  # exactly once per instance, even if the agent retries concurrently
            if not spec or _initialized:
                return self._reply(200)
            err, _ = self._run("Initialize", lambda ctx: _resolve(spec)(ctx))
            _initialized = err is None
        if err:
            self._reply(500, err, error=True)  # the contract treats any non-2xx as a failed initializer
        else:
            self._reply(200)


class _Server(ThreadingHTTPServer):
    request_queue_size = 128  # the agent may open many connections at once under load


def main():
    # As PID 1 SIGTERM is ignored unless handled; exit promptly so the agent need not wait for SIGKILL.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    port = _int(os.environ.get("FC_SERVER_PORT") or os.environ.get("FC_CUSTOM_LISTEN_PORT") or 9000)
    server = _Server(("0.0.0.0", port), Handler)
    try:
        server.serve_forever()
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
