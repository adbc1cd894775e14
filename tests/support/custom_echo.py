# A custom runtime's (or custom container's) server for the HTTP trigger tests: it answers
# what it received (method, path, a header, the body), reading sized and chunked bodies.
# GET /stream writes one chunk, then waits for a call to /go before it writes the last one,
# so a test can see the first chunk arrive while the server cannot have written the rest.
import os
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

go = threading.Event()

class H(BaseHTTPRequestHandler):
    protocol_version = 'HTTP/1.1'
    def _body(self):
        if self.headers.get('transfer-encoding', '').lower() != 'chunked':
            return self.rfile.read(int(self.headers.get('content-length') or 0))
        out = bytearray()
        while True:
            size = int(self.rfile.readline().split(b';')[0], 16)
            if size == 0:
                self.rfile.readline()
                return bytes(out)
            out += self.rfile.read(size)
            self.rfile.readline()
    def _chunk(self, data):
        self.wfile.write(b'%x\r\n%s\r\n' % (len(data), data))
        self.wfile.flush()
    def _stream(self):
        self.send_response(200)
        self.send_header('content-type', 'text/plain')
        self.send_header('transfer-encoding', 'chunked')
        self.end_headers()
        self._chunk(b'first\n')
        released = go.wait(60)
        go.clear()
        self._chunk(b'second\n' if released else b'never told to go on\n')
        self.wfile.write(b'0\r\n\r\n')
        self.wfile.flush()
    def _any(self):
        body = self._body()
        if self.path == '/stream':
            return self._stream()
        if self.path == '/go':
            go.set()
        self.send_response(207)
        self.send_header('x-method', self.command)
        self.send_header('x-path', self.path)
        self.send_header('x-got', self.headers.get('x-custom', ''))
        self.send_header('x-control', self.headers.get('x-fc-control-path', ''))
        self.send_header('x-fwd-host', self.headers.get('x-forwarded-host', ''))
        self.send_header('x-fc-internal', 'hidden')
        self.send_header('content-type', self.headers.get('content-type', 'none'))
        self.send_header('content-length', str(len(body)))
        self.end_headers()
        self.wfile.write(body)
    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = _any
    def log_message(self, *a):
        pass

ThreadingHTTPServer(('0.0.0.0', int(os.environ.get('FC_SERVER_PORT') or 9000)), H).serve_forever()
