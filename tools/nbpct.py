"""Convert between notebooks and the percent text format, for editing notebooks outside Jupyter.

    python tools/nbpct.py to-pct nbs/01_data.ipynb > /tmp/01_data.py
    python tools/nbpct.py to-nb /tmp/01_data.py nbs/01_data.ipynb

Cells start with `# %%` (code) or `# %% [markdown]` (markdown; each line prefixed by `# `).
A cell whose type and source are unchanged keeps its id and outputs; a changed cell takes the id of the old cell at its
position when that id is free, so diffs (and merges) stay small. Run `tools/run_nb.py` to refill outputs and
`nbdev_clean` afterwards.
"""
import json, sys
from pathlib import Path

def to_pct(nb_path):
    nb = json.loads(Path(nb_path).read_text())
    out = []
    for c in nb['cells']:
        src = ''.join(c['source'])
        if c['cell_type'] == 'markdown':
            out.append('# %% [markdown]\n' + '\n'.join(('# ' + l) if l else '#' for l in src.split('\n')))
        else: out.append('# %%\n' + src)
    return '\n\n'.join(out) + '\n'

def _split(text):
    cells, cur, kind = [], None, None
    for line in text.split('\n'):
        if line.startswith('# %%'):
            if cur is not None: cells.append((kind, cur))
            kind, cur = ('markdown' if '[markdown]' in line else 'code'), []
        elif cur is not None: cur.append(line)
    if cur is not None: cells.append((kind, cur))
    return cells

def _keep_ids(cells, old):
    "Give new cells the ids (and outputs) of identical old cells, then of the old cell at the same position."
    pool = {}
    for c in old: pool.setdefault((c['cell_type'], ''.join(c['source'])), []).append(c)
    used = set()
    for c in cells:
        same = pool.get((c['cell_type'], ''.join(c['source'])))
        if same and 'id' in same[0]:
            o = same.pop(0); c['id'] = o['id']; used.add(o['id'])
            if c['cell_type'] == 'code': c['outputs'] = o.get('outputs', []); c['execution_count'] = o.get('execution_count')
    for i, c in enumerate(cells):
        if 'id' not in c and i < len(old) and old[i].get('id') and old[i]['id'] not in used:
            c['id'] = old[i]['id']; used.add(c['id'])
    return cells

def to_nb(pct_path, nb_path):
    cells = []
    for kind, lines in _split(Path(pct_path).read_text()):
        while lines and not lines[-1].strip(): lines.pop()
        if kind == 'markdown': lines = [l[2:] if l.startswith('# ') else l[1:] if l.startswith('#') else l for l in lines]
        src = '\n'.join(lines)
        cell = dict(cell_type=kind, metadata={}, source=src.splitlines(keepends=True))
        if kind == 'code': cell.update(execution_count=None, outputs=[])
        cells.append(cell)
    if Path(nb_path).exists(): cells = _keep_ids(cells, json.loads(Path(nb_path).read_text())['cells'])
    nb = dict(cells=cells, metadata=dict(kernelspec=dict(display_name='python3', language='python', name='python3')),
              nbformat=4, nbformat_minor=5)
    Path(nb_path).write_text(json.dumps(nb, indent=1) + '\n')

if __name__ == '__main__':
    cmd, *args = sys.argv[1:]
    if cmd == 'to-pct': sys.stdout.write(to_pct(args[0]))
    elif cmd == 'to-nb': to_nb(*args)
    else: sys.exit(f'unknown command {cmd!r}: use to-pct or to-nb')
