"""`d2i app` as a user meets it: the command serves the playground on 127.0.0.1, headless Chromium opens it, a dialog is
typed into the turns box, Generate is clicked, and the page shows the image and the prompt exactly as `d2i linearize`
prints it (with the turns it drops marked). The default model is the fine-tuned ShapesChat model of a finished demo folder.

Chromium is driven through its DevTools protocol (a websocket), as a person would use the page: keys typed, a click.
"""
import contextlib, io, json, os, shutil, subprocess, sys, tempfile, time, urllib.request
from pathlib import Path
import pytest

CHROMIUM = shutil.which('chromium') or shutil.which('chromium-browser')
if not CHROMIUM:
    if os.environ.get('D2I_REQUIRE_BROWSER'): raise RuntimeError('D2I_REQUIRE_BROWSER is set but chromium is not installed')
    pytest.skip('Debian chromium is not installed (apt-get install chromium)', allow_module_level=True)
pytest.importorskip('gradio', reason="d2i app's optional extra: pip install 'd2i_lit[app]'")
from websockets.sync.client import connect  # gradio's own dependency

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1', 'GRADIO_ANALYTICS_ENABLED': 'False'}
SMALL = dict(n_train=96, n_test=16, pretrain_steps=3, finetune_steps=2) # a demo trained in a minute, not three
TYPED = 'A: hi there\nB: i made a red circle today\nA: cool, i have a blue square\nB: let me show you mine'

@pytest.fixture(scope='module')
def demo(tmp_path_factory):
    "A finished demo folder, trained small by the demo's own stages (`app.demo_model`)."
    d = tmp_path_factory.mktemp('demo')
    code = f"import sys; from d2i_lit.app import demo_model; demo_model(sys.argv[1], **{SMALL!r})"
    subprocess.run([sys.executable, '-c', code, str(d)], env=ENV, check=True, timeout=900, capture_output=True)
    return d

@pytest.fixture(scope='module')
def server(demo, tmp_path_factory):
    "`d2i app --demo DEMO --port 0` running; its address once the page answers."
    log = tmp_path_factory.mktemp('log')/'stderr'
    with open(log, 'w') as err:
        p = subprocess.Popen([sys.executable, '-m', 'd2i_lit.cli', 'app', '--demo', str(demo), '--port', '0', '--sample-steps', '4'],
                             env=ENV, stdout=subprocess.PIPE, stderr=err, text=True)
    try:
        line = p.stdout.readline()
        assert line.startswith('d2i app: serving on http://127.0.0.1:'), line + log.read_text()[-3000:]
        url = line.split()[-1]
        for _ in range(240):
            try:
                urllib.request.urlopen(url, timeout=5); break
            except OSError: time.sleep(0.5)
        yield url
    finally:
        p.terminate(); p.wait(timeout=60)

class Page:
    "One headless Chromium tab, driven through the DevTools protocol."
    def __init__(self, url):
        flags = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update',
                 '--disable-sync', '--no-first-run', '--remote-debugging-port=0', '--remote-allow-origins=*',
                 f'--user-data-dir={tempfile.mkdtemp()}', '--window-size=1280,2400']
        self.proc = subprocess.Popen([CHROMIUM, *flags, url], stderr=subprocess.PIPE, text=True)
        ws = None
        for _ in range(200):
            line = self.proc.stderr.readline()
            if 'DevTools listening on ' in line: ws = line.split('DevTools listening on ')[1].strip(); break
        assert ws, 'chromium did not start its DevTools server'
        port = ws.split(':')[2].split('/')[0]
        for _ in range(100):
            tabs = [t for t in json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list')) if t['type'] == 'page']
            if tabs: break
            time.sleep(0.1)
        self.stack = contextlib.ExitStack()
        self.ws, self.n = self.stack.enter_context(connect(tabs[0]['webSocketDebuggerUrl'], max_size=None)), 0
    def send(self, method, **params):
        self.n += 1; self.ws.send(json.dumps(dict(id=self.n, method=method, params=params)))
        while True:
            r = json.loads(self.ws.recv(timeout=120))
            if r.get('id') == self.n:
                assert 'error' not in r, r
                return r['result']
    def js(self, expr):
        r = self.send('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
        assert 'exceptionDetails' not in r, r
        return r['result'].get('value')
    def wait(self, expr, timeout=300, what=''):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if (v := self.js(expr)): return v
            time.sleep(0.25)
        raise AssertionError(f'timed out waiting for {what or expr}')
    def type_into(self, selector, text):
        "Focus the field, select what it holds, and type `text` over it, key by key for line breaks."
        self.js(f"(() => {{ const e = document.querySelector({selector!r}); e.focus(); e.select(); }})()")
        for i, line in enumerate(text.split('\n')):
            if i: self.send('Input.dispatchKeyEvent', type='keyDown', key='Enter', code='Enter', windowsVirtualKeyCode=13, text='\r')
            if i: self.send('Input.dispatchKeyEvent', type='keyUp', key='Enter', code='Enter', windowsVirtualKeyCode=13)
            self.send('Input.insertText', text=line)
    def close(self):
        self.stack.close(); self.proc.terminate(); self.proc.wait(timeout=30)

def linearize_cli(turns, model, budget):
    "What `d2i linearize` prints for these turns (a PhotoChat record of them) at the model's tokenizer and `budget`."
    rec = dict(dialogue_id=1, photo_description='', photo_url='', dialogue=[dict(message=t, share_photo=False, user_id=s) for s, t in turns]
               + [dict(message='', share_photo=True, user_id=1)])
    f = Path(tempfile.mkdtemp())/'typed.json'; f.write_text(json.dumps([rec]))
    r = subprocess.run([sys.executable, '-m', 'd2i_lit.cli', 'linearize', str(f), '--style', 'hash', '--max-tokens', str(budget),
                        '--tokenizer', str(model)], env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return json.loads(r.stdout)

def test_typed_dialog_prompt_and_image(server, demo):
    from PIL import Image
    page = Page(server)
    try:
        page.wait("document.querySelector('#d2i-turns textarea') !== null", what='the turns box')
        page.type_into('#d2i-budget-in input', '9')  # a budget the dialog exceeds: its oldest turns are dropped
        page.type_into('#d2i-turns textarea', TYPED)
        assert page.js("document.querySelector('#d2i-turns textarea').value") == TYPED
        page.wait("document.querySelector('#d2i-budget') && document.querySelector('#d2i-budget').textContent === '9'", what='the prompt view')
        page.js("document.querySelector('#d2i-generate').click()")
        src = page.wait("(() => { const i = document.querySelector('#d2i-image img'); return i && i.complete && i.naturalWidth > 0 ? i.src : ''; })()",
                        what='the image')
        shown = page.js("(() => { const i = document.querySelector('#d2i-image img'); return [i.naturalWidth, i.naturalHeight]; })()")
        prompt = page.js("document.querySelector('#d2i-prompt').textContent")
        used = int(page.js("document.querySelector('#d2i-used').textContent"))
        dropped = page.js("[...document.querySelectorAll('#d2i-turns-view li.d2i-dropped')].map(li => li.textContent)")
        kept = page.js("[...document.querySelectorAll('#d2i-turns-view li:not(.d2i-dropped)')].map(li => li.textContent)")
    finally: page.close()
    from d2i_lit.app import parse_turns, demo_model, generate, page_format
    from d2i_lit.pipeline import DialogToImagePipeline
    model = demo_model(demo)  # the finished folder's model: nothing trained now
    want = linearize_cli(parse_turns(TYPED), model, 9)
    assert prompt == want['text'] and want['n_turns_dropped'] >= 1
    assert len(dropped) == want['n_turns_dropped'] and len(dropped) + len(kept) == want['n_turns'] == 4
    assert all(d.endswith('(dropped)') for d in dropped) and kept[-1] == '# let me show you mine'
    pipe = DialogToImagePipeline.from_pretrained(model)
    assert used == len(pipe.backbone.tokenizer(prompt, add_special_tokens=False).input_ids) <= 9
    # the image shown is the model's image of that prompt (same seed and sampler steps), scaled up from 16 pixels
    assert shown == [256, 256]
    got = Image.open(io.BytesIO(urllib.request.urlopen(src).read())).convert('RGB')
    ref = generate(pipe, parse_turns(TYPED), page_format(pipe.backbone, 'hash', 9, 'oldest'), sample_steps=4, guidance=3.0, seed=0)
    import numpy as np
    assert np.abs(np.asarray(got, dtype=int) - np.asarray(ref, dtype=int)).max() <= 2

def test_help_is_fast_and_gradio_free():
    "`d2i app --help` answers without importing gradio or torch."
    code = ("import contextlib, sys, time; t = time.time(); from d2i_lit.cli import main\n"
            "with contextlib.suppress(SystemExit): main(['app', '--help'])\n"
            "print(time.time() - t, 'gradio' in sys.modules, 'torch' in sys.modules, file=sys.stderr)")
    r = subprocess.run([sys.executable, '-c', code], env=ENV, capture_output=True, text=True, timeout=60)
    secs, gradio, torch = r.stderr.split()[-3:]
    assert '--demo' in r.stdout and (gradio, torch) == ('False', 'False') and float(secs) < 1, r.stderr
