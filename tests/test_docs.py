"""The docs site: built offline (nbdev's processed notebooks rendered by smalldocs), served on 127.0.0.1 and loaded in headless Chromium."""
import functools, http.server, json, os, re, shutil, subprocess, sys, tempfile, threading
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
if not CHROMIUM:
    if os.environ.get('D2I_REQUIRE_BROWSER'): raise RuntimeError('D2I_REQUIRE_BROWSER is set but chromium is not installed')
    pytest.skip('Debian chromium is not installed (apt-get install chromium)', allow_module_level=True)

PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="page" src="/%s" style="width:1280px;height:900px"></iframe>
<script>
window.addEventListener('load', () => {
  const d = document.getElementById('page').contentDocument;
  const imgs = [...d.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}));
  const sidebar = [...d.querySelectorAll('#quarto-sidebar .sidebar-item-text')].map(a => a.textContent.trim());
  document.getElementById('result').textContent = JSON.stringify({title: d.title, imgs, sidebar});
});
</script></body></html>"""

def _chromium(*args, timeout=90):
    flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
             '--disable-sync', '--no-first-run', f'--user-data-dir={tempfile.mkdtemp()}']
    return subprocess.run([CHROMIUM, *flags, *args], capture_output=True, text=True, timeout=timeout)

@pytest.fixture(scope='module')
def site(tmp_path_factory):
    "Build the site from a copy of the repo (the build writes `_proc/` and `nbs/sidebar.yml`) and serve it."
    src = tmp_path_factory.mktemp('repo')
    for name in ['nbs', 'd2i_lit', 'tools']: shutil.copytree(ROOT/name, src/name, ignore=shutil.ignore_patterns('__pycache__', '_proc'))
    for name in ['settings.ini', 'setup.py', 'README.md']: shutil.copy(ROOT/name, src/name)
    r = subprocess.run([sys.executable, 'tools/build_docs.py', '--check'], cwd=src, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    docs = src/'_proc'/'_docs'
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(docs))
    handler.log_message = lambda *a: None
    server = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield docs, f'http://127.0.0.1:{server.server_address[1]}'
    server.shutdown()

def _probe(site, page):
    docs, url = site
    (docs/'__probe.html').write_text(PROBE % page)
    r = _chromium('--virtual-time-budget=10000', '--dump-dom', f'{url}/__probe.html')
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, re.S)
    assert m and m.group(1) != 'pending', r.stdout[-2000:] + r.stderr[-2000:]
    import html
    return json.loads(html.unescape(m.group(1)))

def _numbered_titles():
    "The `# Title` of every numbered notebook: each must have a sidebar entry."
    titles = {}
    for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        md = next(c for c in cells if c['cell_type'] == 'markdown')
        titles[nb.name] = re.match(r'#\s+(.+)', ''.join(md['source'])).group(1).strip().replace('`', '')  # the sidebar shows code spans as text
    return titles

@pytest.mark.parametrize('page,title', [('index.html', 'd2i_lit'), ('core.html', 'Core – d2i_lit')])
def test_page_in_browser(site, page, title):
    res = _probe(site, page)
    assert res['title'] == title
    missing = [t for t in _numbered_titles().values() if t not in res['sidebar']]
    assert not missing, f'sidebar lacks {missing}; it has {res["sidebar"]}'
    broken = [i['src'] for i in res['imgs'] if i['width'] == 0]
    assert not broken, f'images that did not load: {broken}'

def test_screenshot(site):
    "A screenshot of the home page, kept for a person to look at (path printed with -s)."
    docs, url = site
    shot = Path(os.environ.get('D2I_SCREENSHOT', docs/'home.png'))
    _chromium('--window-size=1280,1000', f'--screenshot={shot}', f'{url}/index.html')
    assert shot.exists() and shot.stat().st_size > 10_000
    print(shot)
