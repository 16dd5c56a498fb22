"""Execute notebooks in place to store their outputs for the docs, the way `nbdev_test` runs them.

    python tools/run_nb.py nbs/06_pipeline.ipynb [more.ipynb ...] [--flags slow]

Cells flagged `#| cuda`, `#| eval: false`, and (unless `--flags slow`) `#| slow` are not run and keep the outputs
they have, so a stored slow run or a GPU run is not overwritten by a CPU machine. Stops at the first error.
Run `nbdev_clean` afterwards.
"""
import re, sys
from execnb.nbio import read_nb, write_nb
from execnb.shell import CaptureShell
from pathlib import Path

def _skip(flags):
    def f(cell):
        if cell.cell_type != 'code': return True
        src = cell.source
        if re.search(r'^#\|\s*eval:\s*false', src, re.M): return True
        return any(re.search(rf'^#\|\s*{fl}\s*$', src, re.M) for fl in {'cuda', 'slow'} - set(flags))
    return f

def run(path, flags=()):
    nb = read_nb(path)
    shell = CaptureShell(); shell.set_path(Path(path).parent.resolve())
    skip = _skip(flags)
    for c in nb.cells:  # execnb leaves a cell's old outputs in place when it now prints nothing
        if c.cell_type == 'code' and not skip(c): c.outputs, c.execution_count = [], None
    shell.run_all(nb, exc_stop=True, preproc=skip)
    for c in nb.cells:  # a skipped cell keeps its outputs, unless they are an error from running it where it cannot run
        if c.cell_type == 'code' and skip(c) and any(o.get('output_type') == 'error' or 'Traceback' in ''.join(o.get('text', ''))
                                                     for o in c.get('outputs', [])): c.outputs = []
    write_nb(nb, path)

if __name__ == '__main__':
    args = sys.argv[1:]
    flags = args[args.index('--flags')+1].split() if '--flags' in args else []
    for p in [a for i,a in enumerate(args) if a != '--flags' and (i == 0 or args[i-1] != '--flags')]:
        print('running', p); run(p, flags)
