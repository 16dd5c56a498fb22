"""The notebooks as a Jupyter user runs them: top to bottom in a real kernel (nbclient + ipykernel), on the CPU only.

Each notebook runs in a `git clone` of this repository (with the working tree's uncommitted changes laid on top and
committed there), so nothing in the working tree is touched; afterwards `git status --porcelain` in the clone must be
empty: no tracked file changed and no file created that git does not ignore. Every cell runs, as Jupyter's "Run All"
does: cells flagged `#| slow`, `#| cuda` or `#| eval: false` too (only nbdev_test skips them).

A second test compares each notebook's stored text outputs (streams and `text/plain`; pictures ignored) with
those of the re-run, and names the first cell that differs.

    pytest -q tests/test_notebooks.py              # the fast notebooks
    pytest -q -m slow tests/test_notebooks.py      # the slow ones (minutes to hours on 2 CPU cores)

`D2I_NB_TIMEOUT` (seconds, default 3600) limits one cell.
"""
import json, os, re, shutil, subprocess, sys, time
from pathlib import Path
import pytest

nbformat = pytest.importorskip('nbformat')
nbclient = pytest.importorskip('nbclient')
pytest.importorskip('ipykernel')

ROOT = Path(__file__).resolve().parents[1]
NBS = sorted(p.name for p in (ROOT/'nbs').glob('*.ipynb'))
# Over a minute and a half each when every cell runs (measured with this file on 2 busy CPU cores: 07c 1728 s, 10 931 s,
# 11 866 s, 07b 284 s, 09d 252 s, 08a 192 s, 09 90 s), or stopped early so far (05, 06, 06a, 09b, 09c); the other
# thirteen took 315 s together there.
SLOW = {'05_backbones.ipynb', '06_pipeline.ipynb', '06a_zero_shot.ipynb', '07b_checkpoint.ipynb', '07c_finetune.ipynb',
        '08a_metrics.ipynb', '09_experiment.ipynb', '09b_results.ipynb', '09c_study.ipynb', '09d_proxy_study.ipynb',
        '10_roundtrip.ipynb', '11_unified.ipynb'}

def _params(names): return [pytest.param(nb, marks=pytest.mark.slow) if nb in SLOW else nb for nb in names]

@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    "`slow` notebooks run only when `-m` names them (`-m slow`); a plain `pytest tests` skips them."
    if request.node.get_closest_marker('slow') and 'slow' not in (request.config.getoption('markexpr') or ''):
        pytest.skip('slow notebook: run with -m slow')

def _git(repo, *args):
    return subprocess.run(['git', '-C', str(repo), '-c', 'user.name=test', '-c', 'user.email=test@localhost', *args],
                          capture_output=True, text=True, check=True).stdout

@pytest.fixture(scope='module')
def clone(tmp_path_factory):
    "A clone of the repository with the working tree's changes (not its ignored files) committed on top."
    repo = tmp_path_factory.mktemp('nbclone')/'repo'
    subprocess.run(['git', 'clone', '-q', str(ROOT), str(repo)], check=True)
    for f in filter(None, _git(ROOT, 'ls-files', '-d', '-z').split('\0')): (repo/f).unlink(missing_ok=True)
    for f in filter(None, _git(ROOT, 'ls-files', '-m', '-o', '--exclude-standard', '-z').split('\0')):
        if (ROOT/f).is_file(): (repo/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/f, repo/f)
    _git(repo, 'add', '-A')
    if _git(repo, 'status', '--porcelain'): _git(repo, 'commit', '-q', '-m', 'the working tree under test')
    return repo

_runs = {}  # notebook -> its run, shared by both tests

def _kernel_env(repo):
    env = {k: v for k, v in os.environ.items() if not k.startswith(('JPY_', 'PYTEST_'))}
    return {**env, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(repo)}

def _first_error(nb):
    "(cell index, 'Name: value') of the first cell whose outputs hold an error."
    for i, c in enumerate(nb.cells):
        for o in c.get('outputs', []):
            if o.get('output_type') == 'error': return i, f"{o['ename']}: {o['evalue']}"[:500]
    return None, None

def run_notebook(repo, name):
    "Execute `nbs/name` in the clone as Jupyter does; return the executed notebook, the error, the git status and seconds."
    if name in _runs: return _runs[name]
    path = repo/'nbs'/name
    nb = nbformat.read(path, as_version=4)
    client = nbclient.NotebookClient(nb, timeout=int(os.environ.get('D2I_NB_TIMEOUT', 3600)), kernel_name='python3',
                                     resources={'metadata': {'path': str(path.parent)}})
    t0, error = time.monotonic(), None
    try: client.execute(env=_kernel_env(repo))
    except nbclient.exceptions.CellTimeoutError as e: error = (None, f'CellTimeoutError: {str(e)[:300]}')
    except nbclient.exceptions.CellExecutionError: error = _first_error(nb)
    except nbclient.exceptions.DeadKernelError as e: error = (None, f'DeadKernelError: {e}')
    status = _git(repo, 'status', '--porcelain')
    _git(repo, 'checkout', '-q', '--', '.')
    _git(repo, 'clean', '-fdq')  # untracked files that are not ignored; caches in ignored folders stay, as in a checkout
    _runs[name] = nb, error, status, time.monotonic() - t0
    return _runs[name]

@pytest.mark.parametrize('name', _params(NBS))
def test_notebook_runs_and_leaves_tree_clean(clone, name):
    nb, error, status, secs = run_notebook(clone, name)
    print(f'{name}: {secs:.0f} s')
    changed = f'\nand changed the repository (git status --porcelain):\n{status}' if status else ''
    if error:
        i, msg = error
        where = f'cell {i}: ' + ''.join(nb.cells[i].source)[:200] if i is not None else ''
        pytest.fail(f'{name} stopped at {where}\n{msg}{changed}', pytrace=False)
    assert not status, f'{name} changed the repository (git status --porcelain):\n{status}'

def _flags(cell):
    src = ''.join(cell.get('source', ''))
    return {m.group(1) for m in re.finditer(r'^#\|\s*([\w-]+)\s*$', src, re.M)} | (
        {'eval-false'} if re.search(r'^#\|\s*eval:\s*false', src, re.M) else set())

# What may differ between two runs of the same cell and is not a result: how long it took (durations, rates, timers, the
# load average) and progress bars (console and notebook). Everything else a cell prints must reproduce.
_VOLATILE = [(re.compile(r'\b\d+(?:\.\d+)?(?: ?(?:s|ms|min|seconds|minutes)\b)'), '<time>'),
             (re.compile(r'\b\d+(?:\.\d+)? ?[\w ]*?/s\b'), '<rate>'),
             (re.compile(r'\b\d\d:\d\d(?::\d\d)?(?:<\d\d:\d\d(?::\d\d)?)?'), '<timer>'),
             (re.compile(r'load average( at the end)? \d+(?:\.\d+)?'), 'load average <n>'),
             # where a warning was raised names the kernel's cell file, a new name in every kernel
             (re.compile(r'^(?:<ipython-input-[\w-]+>|\S*ipykernel_\d+/\d+\.py):\d+: ', re.M), '<cell>: '),
             # a folder made by tempfile.mkdtemp has a new random name on every run
             (re.compile(r'/tmp/(?:tmp|pytest-of-\w+/)[\w./-]*?(?=/|\b)'), '<tmp>')]
_BAR = re.compile(r'\|[\u2588-\u258f #-]*\|? *\d+(?:\.\d+)?%|\d+%\|[^\n]*\||<progress |IPython\.core\.display\.HTML object')

def _steady(text:str)->str:
    "`text` without progress bars and with durations, rates and timers masked."
    lines = [l for l in re.split(r'[\r\n]+', text) if l.strip() and not _BAR.search(l)]
    out = '\n'.join(lines)
    for pat, rep in _VOLATILE: out = pat.sub(rep, out)
    return out

def text_outputs(cell):
    "A code cell's text outputs (durations and progress bars masked): streams joined per stream, `text/plain` of results without a picture."
    out = []
    for o in cell.get('outputs', []):
        kind = o.get('output_type')
        if kind == 'stream':
            text = ''.join(o.get('text', ''))
            if out and out[-1][0] == o['name']: out[-1] = (o['name'], out[-1][1] + text)
            else: out.append((o['name'], text))
        elif kind in ('execute_result', 'display_data'):
            data = o.get('data', {})
            if not any(k.startswith('image/') for k in data) and 'text/plain' in data:
                out.append(('text/plain', ''.join(data['text/plain'])))
        elif kind == 'error': out.append(('error', f"{o['ename']}: {o['evalue']}"))
    return [(k, t) for k, t in ((k, _steady(t)) for k, t in out) if t]

def first_difference(stored, rerun):
    "The first code cell whose text outputs differ, as a message; cells flagged `cuda` or `eval: false` are not compared."
    cells = [(i, a, b) for i, (a, b) in enumerate(zip(stored.cells, rerun.cells)) if a.cell_type == 'code']
    for i, a, b in cells:
        if _flags(a) & {'cuda', 'eval-false'}: continue
        sa, sb = text_outputs(a), text_outputs(b)
        if sa != sb:
            return (f'cell {i} ({"".join(a.source)[:120]!r}) differs:\n'
                    f'stored: {json.dumps(sa)[:1500]}\nre-run: {json.dumps(sb)[:1500]}')
    return None

@pytest.mark.parametrize('name', _params(NBS))
def test_outputs_reproduce(clone, name):
    "A re-run prints what the notebook stores (numbers, warnings, paths), so the stored outputs are what a reader gets."
    nb, error, _, _ = run_notebook(clone, name)
    if error: pytest.fail(f'{name} did not run to the end: {error[1]}', pytrace=False)
    stored = nbformat.read(ROOT/'nbs'/name, as_version=4)
    diff = first_difference(stored, nb)
    assert diff is None, f'{name}: {diff}'

def test_first_difference_names_the_cell():
    "The comparison: streams joined across chunks, pictures ignored, a changed number found in the right cell."
    cell = lambda *outs: nbformat.v4.new_code_cell('x', outputs=[nbformat.from_dict(o) for o in outs])
    s = lambda text, name='stdout': {'output_type': 'stream', 'name': name, 'text': text}
    pic = {'output_type': 'display_data', 'data': {'image/png': 'AAA', 'text/plain': '<Figure>'}, 'metadata': {}}
    res = lambda t: {'output_type': 'execute_result', 'data': {'text/plain': t}, 'metadata': {}, 'execution_count': 1}
    a = nbformat.v4.new_notebook(cells=[cell(s('a\n'), s('b\n')), cell(pic, res('0.25')), cell(res('1'))])
    b = nbformat.v4.new_notebook(cells=[cell(s('a\nb\n')), cell(res('0.25')), cell(res('1'))])
    assert first_difference(a, b) is None
    b.cells[2].outputs[0]['data']['text/plain'] = '2'
    assert first_difference(a, b).startswith('cell 2 ')
    b.cells[2].outputs[0]['data']['text/plain'] = '1'
    b.cells[0].outputs.append(nbformat.from_dict(s('warning\n', 'stderr')))
    assert first_difference(a, b).startswith('cell 0 ')

def test_durations_and_bars_are_not_results():
    "Timings, rates, timers and progress bars are masked; a number that is a result is not."
    assert _steady('300 records in 0.32 s (930 records/s)') == _steady('300 records in 0.18 s (1637 records/s)')
    assert _steady('trained in 10.9 s; load average at the end 7.3') == _steady('trained in 14.1 s; load average at the end 1.8')
    bar = ' |\u2588\u2588----| 50.00% [3/6 00:13<00:13]\r |\u2588\u2588\u2588\u2588| 100.00% [6/6 00:26<00:00]\n'
    assert _steady(bar + 'done\n') == 'done' == _steady('<IPython.core.display.HTML object>\ndone')
    assert _steady('Loading weights: 100%|\u2588\u2588\u2588\u2588\u2588| 36/36 [00:00<00:00, 25398.64it/s]') == ''
    assert _steady('FID 14.07 over 48 images') != _steady('FID 14.08 over 48 images')
    assert _steady('seed 0: 0.625') != _steady('seed 0: 0.650')
    w = '{}:17: UserWarning: 3 found, 204 missing in {}/photos'
    assert _steady(w.format('<ipython-input-1-648373cef486>', '/tmp/tmphwp2pouh')) == \
           _steady(w.format('/tmp/ipykernel_1294/694930124.py', '/tmp/tmpc12_pv49'))
    assert _steady('missing in /tmp/tmpab/photos') != _steady('missing in /tmp/tmpab/images')
