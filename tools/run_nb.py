"""Execute notebooks in place to store their outputs, in a Jupyter kernel as a reader runs them (nbclient + ipykernel).

    python tools/run_nb.py nbs/06_pipeline.ipynb [more.ipynb ...] [--flags slow]

Cells flagged `#| cuda`, `#| eval: false`, and (unless `--flags slow`) `#| slow` are not run and keep the outputs
they have, so a stored slow run or a GPU run is not overwritten by a CPU machine. Stops at the first error (the
notebook is then left as it was). The kernel runs on the CPU (`CUDA_VISIBLE_DEVICES=''`), offline, with `nbs/` as its
working folder, so the stored outputs are what `tests/test_notebooks.py` gets when it re-runs the notebook.
Run `nbdev_clean` afterwards.
"""
import copy, os, re, sys
from pathlib import Path
import nbformat, nbclient

def _skipped(cell, flags)->bool:
    "Whether `cell` is left as it is (not run, outputs kept)."
    if cell.cell_type != 'code': return True
    if re.search(r'^#\|\s*eval:\s*false', cell.source, re.M): return True
    return any(re.search(rf'^#\|\s*{fl}\s*$', cell.source, re.M) for fl in {'cuda', 'slow'} - set(flags))

def run(path, flags=()):
    path = Path(path).resolve()
    nb = nbformat.read(path, as_version=4)
    todo = copy.deepcopy(nb)
    for c in todo.cells: # a skipped cell runs as an empty one: the others run in order, in one kernel
        if _skipped(c, flags): c.source, c.outputs = ('' if c.cell_type == 'code' else c.source), []
    env = {**os.environ, 'CUDA_VISIBLE_DEVICES': '', 'HF_HUB_OFFLINE': '1'}
    nbclient.NotebookClient(todo, timeout=int(os.environ.get('D2I_NB_TIMEOUT', 7200)), kernel_name='python3',
                            resources={'metadata': {'path': str(path.parent)}}).execute(env=env)
    for c, r in zip(nb.cells, todo.cells):
        if c.cell_type == 'code' and not _skipped(c, flags): c.outputs, c.execution_count = r.outputs, r.execution_count
    nbformat.write(nb, path)

if __name__ == '__main__':
    args = sys.argv[1:]
    flags = args[args.index('--flags')+1].split() if '--flags' in args else []
    for p in [a for i,a in enumerate(args) if a != '--flags' and (i == 0 or args[i-1] != '--flags')]:
        print('running', p, flush=True); run(p, flags)
