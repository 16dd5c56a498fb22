"""Measure how the package reads: long functions, many-parameter functions, long lines, long notebook cells, imports
inside functions, public definitions never shown in a notebook example.

    python tools/code_stats.py [--list] [--root DIR]

Counted in the exported modules (`d2i_lit/*.py` but `_modidx.py`). A code line is a line that is not blank and not only a
comment; a function's parameters count `self`/`cls` out and `*args`/`**kw` in; command-line entry points (`_*_main`)
take one settings object and are listed apart. A public definition is a name in a module's `__all__`; it is *shown* when some notebook cell that is not exported
(an example or check cell) mentions it by name.
"""
import ast, json, re, sys
from pathlib import Path

root = Path(sys.argv[sys.argv.index('--root') + 1]) if '--root' in sys.argv else Path(__file__).resolve().parent.parent
pkg, nbs = root/'d2i_lit', root/'nbs'
LONG_LINE, MANY_PARAMS, LONG_FN, VERY_LONG_FN, LONG_CELL = 120, 10, 25, 60, 60

def functions(tree):
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)): yield n

def code_lines(n, src_lines):
    "Lines of a function that hold code (no blank lines, no comment-only lines)."
    return sum(1 for l in src_lines[n.lineno-1:n.end_lineno] if l.strip() and not l.strip().startswith('#'))

def n_params(fn)->int:
    a = fn.args
    names = [x.arg for x in a.posonlyargs + a.args + a.kwonlyargs]
    if names and names[0] in ('self', 'cls'): names = names[1:]
    return len(names) + (a.vararg is not None) + (a.kwarg is not None)

def is_entry_point(name:str)->bool: return name.startswith('_') and name.endswith('_main')

def long_cells():
    "(lines, notebook, cell number) of notebook code cells over LONG_CELL non-blank lines."
    out = []
    for nb in sorted(nbs.glob('*.ipynb')):
        for i, c in enumerate(json.loads(nb.read_text())['cells']):
            n = sum(1 for l in ''.join(c['source']).split('\n') if l.strip())
            if c['cell_type'] == 'code' and n > LONG_CELL: out.append((n, nb.name, i))
    return sorted(out, reverse=True)

def example_text():
    out = []
    for nb in sorted(nbs.glob('*.ipynb')):
        for c in json.loads(nb.read_text())['cells']:
            if c['cell_type'] != 'code': continue
            src = ''.join(c['source'])
            if re.search(r'^#\|\s*(export|exports|exporti)\b', src, re.M): continue
            out.append(src)
    return '\n'.join(out)

def stats():
    long, inner, public, shown, many, lines_all, lines_long = [], [], [], [], [], 0, 0
    ex = example_text()
    for f in sorted(pkg.glob('*.py')):
        if f.name.startswith('_'): continue
        src = f.read_text(); tree = ast.parse(src); lines = src.split('\n')
        code = [l for l in lines if l.strip() and not l.strip().startswith('#')]
        lines_all += len(code); lines_long += sum(len(l) > LONG_LINE for l in code)
        for fn in functions(tree):
            n = code_lines(fn, lines)
            if n > LONG_FN: long.append((n, f'{f.stem}.{fn.name}'))
            p = n_params(fn)
            if p >= MANY_PARAMS: many.append((p, f'{f.stem}.{fn.name}', is_entry_point(fn.name)))
            for sub in ast.walk(fn):
                if isinstance(sub, (ast.Import, ast.ImportFrom)): inner.append(f'{f.stem}.{fn.name}')
        names = []
        for n in tree.body:
            if isinstance(n, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in n.targets):
                names = [e.value for e in n.value.elts]
        for name in names:
            public.append(f'{f.stem}.{name}')
            if re.search(rf'\b{re.escape(name)}\b', ex): shown.append(f'{f.stem}.{name}')
    return sorted(long, reverse=True), inner, public, shown, sorted(many, reverse=True), (lines_long, lines_all)

if __name__ == '__main__':
    long, inner, public, shown, many, (nl, na) = stats()
    cells = long_cells()
    print(f'longest function: {long[0][1]} ({long[0][0]} code lines)' if long else 'no function over 25 lines')
    print(f'functions over {VERY_LONG_FN} code lines: {sum(n > VERY_LONG_FN for n, _ in long)}')
    print(f'functions over {LONG_FN} code lines: {len(long)}')
    print(f'functions with {MANY_PARAMS}+ parameters: {sum(not e for *_, e in many)} (+ {sum(e for *_, e in many)} `_*_main` entry points)')
    print(f'code lines over {LONG_LINE} characters: {nl} of {na} ({100 * nl / max(na, 1):.1f}%)')
    print(f'notebook code cells over {LONG_CELL} lines: {len(cells)}')
    print(f'imports inside functions: {len(inner)}')
    print(f'public definitions: {len(public)}, never shown in an example: {len(public)-len(shown)}')
    if '--list' in sys.argv:
        print('\n# long functions'); [print(f'  {n:4d} {name}') for n, name in long]
        print('\n# many parameters'); [print(f'  {n:4d} {name}{" (entry point)" if e else ""}') for n, name, e in many]
        print('\n# long cells'); [print(f'  {n:4d} {nb} cell {i}') for n, nb, i in cells]
        print('\n# not shown'); [print('  ', p) for p in public if p not in shown]
        from collections import Counter
        print('\n# inner imports'); [print(f'  {c:3d} {k}') for k, c in Counter(inner).most_common()]
