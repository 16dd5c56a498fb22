"""Measure how the package reads: long functions, imports inside functions, public definitions never shown in a notebook example.

    python tools/code_stats.py [--list]

A public definition is a name in a module's `__all__`; it is *shown* when some notebook cell that is not exported
(an example or check cell) mentions it by name.
"""
import ast, json, re, sys
from pathlib import Path

root = Path(__file__).resolve().parent.parent
pkg, nbs = root/'d2i_lit', root/'nbs'

def functions(tree):
    for n in ast.walk(tree):
        if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef)): yield n

def code_lines(n, src_lines):
    "Lines of a function that hold code (no blank lines, no comment-only lines)."
    return sum(1 for l in src_lines[n.lineno-1:n.end_lineno] if l.strip() and not l.strip().startswith('#'))

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
    long, inner, public, shown = [], [], [], []
    ex = example_text()
    for f in sorted(pkg.glob('*.py')):
        if f.name.startswith('_'): continue
        src = f.read_text(); tree = ast.parse(src); lines = src.split('\n')
        for fn in functions(tree):
            n = code_lines(fn, lines)
            if n > 25: long.append((n, f'{f.stem}.{fn.name}'))
            for sub in ast.walk(fn):
                if isinstance(sub, (ast.Import, ast.ImportFrom)): inner.append(f'{f.stem}.{fn.name}')
        names = []
        for n in tree.body:
            if isinstance(n, ast.Assign) and any(getattr(t, 'id', None) == '__all__' for t in n.targets):
                names = [e.value for e in n.value.elts]
        for name in names:
            public.append(f'{f.stem}.{name}')
            if re.search(rf'\b{re.escape(name)}\b', ex): shown.append(f'{f.stem}.{name}')
    return sorted(long, reverse=True), inner, public, shown

if __name__ == '__main__':
    long, inner, public, shown = stats()
    print(f'longest function: {long[0][1]} ({long[0][0]} code lines)' if long else 'no function over 25 lines')
    print(f'functions over 25 code lines: {len(long)}')
    print(f'imports inside functions: {len(inner)}')
    print(f'public definitions: {len(public)}, never shown in an example: {len(public)-len(shown)}')
    if '--list' in sys.argv:
        print('\n# long functions'); [print(f'  {n:4d} {name}') for n, name in long]
        print('\n# not shown'); [print('  ', p) for p in public if p not in shown]
        from collections import Counter
        print('\n# inner imports'); [print(f'  {c:3d} {k}') for k, c in Counter(inner).most_common()]
