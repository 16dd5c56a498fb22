"""A photo server for tests: `http.server` on 127.0.0.1 in a thread, serving canned answers (photos, 404s, slow,
truncated and non-image bodies, redirects) and counting the requests for each path. No other address is involved."""
import http.server, io, threading, time
from collections import Counter
from PIL import Image

def jpeg(size=(64, 48), colour=(200, 40, 40), fmt='JPEG')->bytes:
    "An encoded image of one colour."
    buf = io.BytesIO(); Image.new('RGB', size, colour).save(buf, fmt); return buf.getvalue()

class PhotoServer:
    "`routes` maps a path to dict(body=b'', status=200, delay=0, truncate=None, location=None); other paths answer 404."
    def __init__(self, routes:dict):
        self.routes, self.counts, self.lock = dict(routes), Counter(), threading.Lock()
        srv = self
        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *a): pass
            def do_GET(self):
                with srv.lock: srv.counts[self.path] += 1
                r = srv.routes.get(self.path)
                try:
                    if r is None:
                        self.send_response(404); self.send_header('Content-Length', '0'); self.end_headers(); return
                    time.sleep(r.get('delay', 0))
                    if r.get('location'):
                        self.send_response(r.get('status', 302)); self.send_header('Location', r['location'])
                        self.send_header('Content-Length', '0'); self.end_headers(); return
                    body = r.get('body', b'')
                    self.send_response(r.get('status', 200))
                    self.send_header('Content-Type', r.get('type', 'image/jpeg'))
                    self.send_header('Content-Length', str(len(body))); self.end_headers()
                    self.wfile.write(body[:r['truncate']] if r.get('truncate') is not None else body)
                    self.close_connection = True
                except (BrokenPipeError, ConnectionResetError): pass  # the client gave up (a timeout): fine
        self.server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), Handler)
        self.server.daemon_threads = True

    @property
    def base(self)->str: return f'http://127.0.0.1:{self.server.server_address[1]}'
    def url(self, path:str)->str: return self.base + path

    def __enter__(self):
        threading.Thread(target=self.server.serve_forever, daemon=True).start(); return self
    def __exit__(self, *a):
        self.server.shutdown(); self.server.server_close()
