"""Find (and with --fix, split) notebook cells that mix imports with other code.

nbdev's docs build runs every cell that contains an import, in a fresh namespace, to render `show_doc`; a cell that
also uses earlier results then fails there. Imports belong in cells of their own.

    python tools/split_imports.py nbs/*.ipynb [--fix]
"""
import ast, json, re, sys
from pathlib import Path

def _directives(src): return {m.group(1) for m in re.finditer(r'^#\|\s*([\w-]+)', src, re.M)}

def _mixed(src):
    if _directives(src) & {'export', 'exports', 'exporti', 'exec_doc'}: return None
    if re.search(r'^#\|\s*eval:\s*false', src, re.M) or 'nbdev_export()' in src: return None
    try: tree = ast.parse('\n'.join(l for l in src.split('\n') if not l.lstrip().startswith(('%', '!'))))
    except SyntaxError: return None
    imps = [n for n in ast.walk(tree) if isinstance(n, (ast.Import, ast.ImportFrom))]
    if not imps or not any(isinstance(n, (ast.Expr, ast.Assign)) for n in ast.walk(tree)): return None
    return tree

def fix_cell(src):
    "Split top-level imports into their own cell; None if an import is nested (fix by hand)."
    tree = _mixed(src)
    lines = src.split('\n')
    top = [n for n in tree.body if isinstance(n, (ast.Import, ast.ImportFrom))]
    if len(top) != sum(isinstance(n, (ast.Import, ast.ImportFrom)) for n in ast.walk(tree)): return None
    idx = {i for n in top for i in range(n.lineno-1, n.end_lineno)}
    flags = [l for l in lines if l.startswith('#|')]
    imp = [l for i,l in enumerate(lines) if i in idx]
    rest = [l for i,l in enumerate(lines) if i not in idx]
    return '\n'.join(flags + imp), '\n'.join(rest)

def main(paths, fix):
    bad = 0
    for p in paths:
        nb = json.loads(Path(p).read_text()); cells, changed = [], False
        for c in nb['cells']:
            src = ''.join(c['source'])
            if c['cell_type'] != 'code' or _mixed(src) is None: cells.append(c); continue
            res = fix_cell(src) if fix else None
            if res is None:
                bad += 1; print(f'{p}: mixed cell{" (nested import: fix by hand)" if fix else ""}:\n  ' + src[:200].replace('\n', '\n  '))
                cells.append(c); continue
            imp, rest = res
            cells.append(dict(cell_type='code', execution_count=None, metadata={}, outputs=[], source=imp.splitlines(keepends=True)))
            c['source'] = rest.splitlines(keepends=True); cells.append(c); changed = True
        if changed:
            nb['cells'] = cells; Path(p).write_text(json.dumps(nb, indent=1) + '\n'); print(f'{p}: split')
    return bad

if __name__ == '__main__':
    args = sys.argv[1:]
    sys.exit(1 if main([a for a in args if a != '--fix'], '--fix' in args) else 0)
