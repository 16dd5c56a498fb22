"""A photo server for tests: `http.server` on 127.0.0.1 in a thread, serving canned answers (photos, 404s, slow,
truncated and non-image bodies, redirects, bodies or headers sent a byte at a time, endless bodies) and counting the
requests for each path. No other address is involved."""
import http.server, io, threading, time
from collections import Counter
from PIL import Image

def jpeg(size=(64, 48), colour=(200, 40, 40), fmt='JPEG')->bytes:
    "An encoded image of one colour."
    buf = io.BytesIO(); Image.new('RGB', size, colour).save(buf, fmt); return buf.getvalue()

class PhotoServer:
    """`routes` maps a path to dict(body=b'', status=200, delay=0, truncate=None, location=None, trickle=None,
    slow_headers=None, endless=False); `fallback(path)` answers other paths (None: 404).
    `trickle`: seconds between the body's bytes; `slow_headers`: seconds between the bytes of the status line and headers;
    `endless`: a body without Content-Length that never ends (a byte every `trickle` seconds, else as fast as it goes)."""
    def __init__(self, routes:dict, fallback=None):
        self.routes, self.fallback, self.counts, self.lock = dict(routes), fallback, Counter(), threading.Lock()
        self.open = 0  # requests being answered now
        srv = self
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                with srv.lock: srv.counts[self.path] += 1; srv.open += 1
                try: self._answer(srv.routes.get(self.path) or (srv.fallback(self.path) if srv.fallback else None))
                except (BrokenPipeError, ConnectionResetError, OSError): pass  # the client gave up (a timeout): fine
                finally:
                    with srv.lock: srv.open -= 1
            def _answer(self, r):
                if r is None:
                    self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
                time.sleep(r.get('delay', 0))
                if r.get('location'):
                    self.send_response(r.get('status', 302)); self.send_header('Location', r['location'])
                    self.send_header('Content-Length', '0'); self.end_headers(); return
                body = r.get('body', b'')
                head = (f"HTTP/1.1 {r.get('status', 200)} OK\r\nContent-Type: {r.get('type', 'image/jpeg')}\r\n"
                        + ('' if r.get('endless') else f'Content-Length: {len(body)}\r\n') + 'Connection: close\r\n\r\n').encode()
                self.close_connection = True
                if r.get('slow_headers'):
                    for b in head: self.wfile.write(bytes([b])); self.wfile.flush(); time.sleep(r['slow_headers'])
                else: self.wfile.write(head)
                if r.get('endless'):
                    while True: self.wfile.write(b'\xff' * (1 if r.get('trickle') else 1 << 16)); self.wfile.flush(); time.sleep(r.get('trickle') or 0)
                sent = body[:r['truncate']] if r.get('truncate') is not None else body
                if r.get('trickle'):
                    for b in sent: self.wfile.write(bytes([b])); self.wfile.flush(); time.sleep(r['trickle'])
                else: self.wfile.write(sent)
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True

    @property
    def base(self)->str: return f'http://127.0.0.1:{self.server.server_address[1]}'
    def url(self, path:str)->str: return self.base + path

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start(); return self
    def __exit__(self, *a):
        self.server.shutdown(); self.server.server_close()
