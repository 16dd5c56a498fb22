"""The docs site: built offline (nbdev's processed notebooks rendered by smalldocs), served on 127.0.0.1 and loaded in headless Chromium.

One Chromium run loads every page in turn and measures what a reader sees: the title, the sidebar, images, text that is
raw Markdown, where each link points once the browser has resolved it, tables and code cut off by the page, numbers in
neighbouring table cells that run together, and setup cells that show an output.
"""
import configparser, functools, html, http.server, json, os, re, shutil, subprocess, sys, tempfile, threading
from pathlib import Path
from urllib.parse import urlsplit, unquote
import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
if not CHROMIUM:
    if os.environ.get('D2I_REQUIRE_BROWSER'): raise RuntimeError('D2I_REQUIRE_BROWSER is set but chromium is not installed')
    pytest.skip('Debian chromium is not installed (apt-get install chromium)', allow_module_level=True)

# What one page shows, measured in the page as Chromium lays it out (a 1280 px wide frame).
CHECK_JS = r"""
function check(d) {
  const w = d.defaultView, main = d.querySelector('main') || d.body;
  const sidebar = [...d.querySelectorAll('#quarto-sidebar .sidebar-item-text')].map(a => a.textContent.trim());
  const imgs = [...d.images].map(i => ({src: i.getAttribute('src'), width: i.naturalWidth}));
  // Markdown that reached the reader as text: a link's `](target)` outside any link
  const raw = main.innerText.match(/.{0,50}\]\((https?:\/\/|[\w.\/-]+\.html)[^)\s]{0,60}\)?/g) || [];
  const links = [...d.querySelectorAll('a[href]')].map(a => ({attr: a.getAttribute('href'), url: a.href,
      sig: !!a.closest('.signature'), text: a.textContent.trim().slice(0, 40)}));
  const ids = [...d.querySelectorAll('[id]')].map(e => e.id);
  const overflowX = e => w.getComputedStyle(e).overflowX;
  const rect = e => e.getBoundingClientRect();
  // the ancestors inside which `el` is seen: the first that scrolls, and those that cut it off without a scrollbar
  function boxes(el) {
    let scroller = null; const cutters = [];
    for (let a = el.parentElement; a && a !== d.documentElement; a = a.parentElement) {
      const ox = overflowX(a);
      if (!scroller && (ox === 'auto' || ox === 'scroll')) scroller = a;
      if (ox === 'hidden' || ox === 'clip') cutters.push(a);
    }
    return {scroller, cutters};
  }
  const inside = (r, box) => r.right <= box.right + 1 && r.left >= box.left - 1;
  // every table's last column can be seen, scrolling its box to the end where the table is wider than the page
  const tables = [];
  for (const t of main.querySelectorAll('table')) {
    const row = t.rows[0]; if (!row || !row.cells.length || !rect(t).width) continue;
    const last = row.cells[row.cells.length - 1], {scroller, cutters} = boxes(t);
    const scrolled = !!scroller && scroller.scrollWidth > scroller.clientWidth + 1;
    if (scroller) scroller.scrollLeft = scroller.scrollWidth;
    const r = rect(last), seen = (scroller ? inside(r, rect(scroller)) : inside(r, rect(main))) && cutters.every(c => inside(r, rect(c)));
    if (scroller) scroller.scrollLeft = 0;
    tables.push({head: row.textContent.replace(/\s+/g, ' ').trim().slice(0, 80), last: last.textContent.trim(), seen, scrolled});
  }
  // text of neighbouring cells closer than 4 px reads as one number ("14.07.021.0")
  const tight = [];
  const textBox = c => { const r = d.createRange(); r.selectNodeContents(c); return r.getBoundingClientRect(); };
  for (const t of main.querySelectorAll('table')) for (const row of t.rows) {
    const cells = [...row.cells];
    for (let i = 0; i + 1 < cells.length; i++) {
      const a = textBox(cells[i]), b = textBox(cells[i + 1]);
      if (a.width && b.width && Math.abs(a.top - b.top) < a.height && b.left - a.right < 4) {
        tight.push(cells[i].textContent.trim() + ' | ' + cells[i + 1].textContent.trim());
      }
    }
  }
  // code wraps at the page's width; printed output scrolls in its own box; nothing is cut off unseen
  const code = [], cut = [];
  for (const pre of main.querySelectorAll('pre')) {
    if (!rect(pre).width) continue;
    const first = pre.textContent.trim().split('\n')[0].slice(0, 80);
    if (pre.closest('div.sourceCode') && pre.scrollWidth > pre.clientWidth + 1) code.push(first);
    const {scroller, cutters} = boxes(pre), ox = overflowX(pre);
    const scrolls = ox === 'auto' || ox === 'scroll' || !!scroller;
    if ((pre.scrollWidth > pre.clientWidth + 1 && !scrolls) || cutters.some(c => !inside(rect(pre), rect(c)))) cut.push(first);
  }
  // setup cells (imports, environment variables) that show an output, such as os.environ.setdefault's '1'
  const boilerplate = [];
  for (const cell of main.querySelectorAll('.cell')) {
    const src = cell.querySelector('.cell-code'), out = cell.querySelector('.cell-output');
    if (!src || !out) continue;
    const lines = src.textContent.split('\n').map(l => l.trim()).filter(l => l && !l.startsWith('#'));
    if (lines.length && lines.every(l => /^(import\s|from\s+\S+\s+import\s|os\.environ)/.test(l)))
      boilerplate.push(lines.join('; ').slice(0, 100) + ' -> ' + out.textContent.trim().slice(0, 40));
  }
  return {title: d.title, sidebar, imgs, raw, links, ids, tables, tight, code, cut, boilerplate,
          signatures: main.querySelectorAll('.signature').length};
}
"""

PROBE = """<!doctype html><html><body><pre id="result">pending</pre>
<iframe id="page" style="width:1280px;height:900px"></iframe>
<script>%s
const pages = %s, out = {}, frame = document.getElementById('page');
(async () => {
  for (const p of pages) {
    await new Promise(done => { frame.onload = done; frame.src = '/' + p; });
    try { out[p] = check(frame.contentDocument); } catch (e) { out[p] = {error: String(e)}; }
  }
  document.getElementById('result').textContent = JSON.stringify(out);
})();
</script></body></html>"""

def _chromium(*args, timeout=300):
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

@pytest.fixture(scope='module')
def pages(site):
    "Every page of the site, loaded in turn in one Chromium run: page -> what `check` measured on it."
    docs, url = site
    names = sorted(p.name for p in docs.glob('*.html') if not p.name.startswith('__'))
    (docs/'__probe.html').write_text(PROBE % (CHECK_JS, json.dumps(names)))
    r = _chromium('--virtual-time-budget=120000', '--dump-dom', f'{url}/__probe.html')
    m = re.search(r'<pre id="result">(.*?)</pre>', r.stdout, re.S)
    assert m and m.group(1) != 'pending', r.stdout[-2000:] + r.stderr[-2000:]
    res = json.loads(html.unescape(m.group(1)))
    errors = {p: v['error'] for p, v in res.items() if 'error' in v}
    assert not errors, errors
    assert sorted(res) == names
    return res

def _numbered_titles():
    "The `# Title` of every numbered notebook: each must have a sidebar entry."
    titles = {}
    for nb in sorted((ROOT/'nbs').glob('[0-9][0-9]*.ipynb')):
        cells = json.loads(nb.read_text())['cells']
        md = next(c for c in cells if c['cell_type'] == 'markdown')
        titles[nb.name] = re.match(r'#\s+(.+)', ''.join(md['source'])).group(1).strip().replace('`', '')  # the sidebar shows code spans as text
    return titles

def _doc_host():
    cfg = configparser.ConfigParser(delimiters=['='])
    cfg.read(ROOT/'settings.ini')
    return cfg['DEFAULT']['doc_host']

@pytest.mark.parametrize('page,title', [('index.html', 'd2i_lit'), ('core.html', 'Core – d2i_lit')])
def test_page_in_browser(pages, page, title):
    res = pages[page]
    assert res['title'] == title
    missing = [t for t in _numbered_titles().values() if t not in res['sidebar']]
    assert not missing, f'sidebar lacks {missing}; it has {res["sidebar"]}'

def test_images_load(pages):
    broken = {p: [i['src'] for i in r['imgs'] if i['width'] == 0] for p, r in pages.items()}
    assert not {p: b for p, b in broken.items() if b}, 'images that did not load'

def test_no_raw_markdown(pages):
    "No page shows a Markdown link as text (`[`Dialog`](https://...)` in a signature's comment was the case)."
    raw = {p: r['raw'] for p, r in pages.items() if r['raw']}
    assert not raw, raw

def test_signatures_link_names(pages):
    "Signatures render the names their comments mention as links (roundtrip's Captioner names caption_tokenizer)."
    sig = [l for l in pages['roundtrip.html']['links'] if l['sig']]
    assert 'caption_tokenizer' in {l['text'] for l in sig}, sig[:5]
    assert sum(r['signatures'] for r in pages.values()) > 100

def test_links_relative_and_resolve(pages):
    "Cross-references are relative (never to settings.ini's doc_host) and land on a page and heading of this site."
    host, bad = urlsplit(_doc_host()).netloc, []
    for page, r in pages.items():
        for l in r['links']:
            if urlsplit(l['attr']).netloc == host: bad.append((page, l['attr'], 'absolute link to doc_host'))
            u = urlsplit(l['url'])
            if u.hostname != '127.0.0.1' or not u.path.endswith('.html'): continue  # github source links, site resources
            target = unquote(u.path).lstrip('/')
            if target not in pages: bad.append((page, l['attr'], 'no such page'))
            elif u.fragment and unquote(u.fragment) not in pages[target]['ids']: bad.append((page, l['attr'], 'no such heading'))
    assert not bad, bad[:20]
    own = sum(1 for r in pages.values() for l in r['links'] if urlsplit(l['attr']).fragment and not urlsplit(l['attr']).scheme
              and urlsplit(l['attr']).path)
    assert own > 300, f'only {own} cross-references between pages'

def test_tables_show_every_column(pages):
    "A table wider than the page scrolls in its own box to its last column (study's learning curves end in `seconds`)."
    hidden = [(p, t['head'], t['last']) for p, r in pages.items() for t in r['tables'] if not t['seen']]
    assert not hidden, hidden
    curves = [t for t in pages['study.html']['tables'] if t['last'] == 'seconds']
    assert curves and all(t['seen'] for t in curves)

def test_table_cells_apart(pages):
    "Numbers in neighbouring cells stay apart (`14.0 7.0 21.0`, not `14.07.021.0`)."
    tight = {p: r['tight'][:5] for p, r in pages.items() if r['tight']}
    assert not tight, tight

def test_code_wraps_and_nothing_is_cut(pages):
    wide = {p: r['code'][:3] for p, r in pages.items() if r['code']}
    assert not wide, f'code wider than the page (it should wrap): {wide}'
    cut = {p: r['cut'][:3] for p, r in pages.items() if r['cut']}
    assert not cut, f'output cut off with no way to scroll to it: {cut}'

def test_no_setup_output(pages):
    "Setup cells show no output (`os.environ.setdefault(...)` printed '1')."
    shown = [f'{p}: {b}' for p, r in pages.items() for b in r['boilerplate']]
    assert not shown, 'setup cells with an output (hide it with `#| output: false`):\n' + '\n'.join(shown)

def test_screenshot(site):
    "A screenshot of the home page, kept for a person to look at (path printed with -s)."
    docs, url = site
    shot = Path(os.environ.get('D2I_SCREENSHOT', docs/'home.png'))
    _chromium('--window-size=1280,1000', f'--screenshot={shot}', f'{url}/index.html')
    assert shot.exists() and shot.stat().st_size > 10_000
    print(shot)
