"""Build the docs site offline: nbdev's processed notebooks rendered by smalldocs.

`nbdev_docs` (nbdev's own command) needs Quarto, which cannot be installed without internet. This script runs the
same steps as `nbdev_proc_nbs` (refresh `nbdev.yml`, rebuild the index, write `sidebar.yml`, process the notebooks
into `_proc/`) without nbdev's attempt to download Quarto, then renders `_proc/` with smalldocs into `_proc/_docs/`.

    python tools/build_docs.py [--check]     # --check also runs `smalldocs check` and fails on its findings
"""
import subprocess, sys
from pathlib import Path

def _name_pages_like_quarto(cache):
    "Rename each processed notebook to its `output-file` (as Quarto names its page), since smalldocs does not read that key."
    import json, re
    sidebar = cache/'sidebar.yml'
    side = sidebar.read_text() if sidebar.exists() else ''
    for nb_path in sorted(cache.rglob('*.ipynb')):
        nb = json.loads(nb_path.read_text())
        cell = nb['cells'][0] if nb['cells'] else None
        if not cell or cell['cell_type'] != 'raw': continue
        src = ''.join(cell['source'])
        m = re.search(r'^output-file: (.+)$', src, re.M)
        if not m: continue
        cell['source'] = re.sub(r'^output-file: .+\n', '', src, flags=re.M).splitlines(keepends=True)
        new = nb_path.with_name(Path(m.group(1).strip()).stem + '.ipynb')
        nb_path.unlink()
        new.write_text(json.dumps(nb))
        side = side.replace(str(nb_path.relative_to(cache)), str(new.relative_to(cache)))
    if side: sidebar.write_text(side)

def build(check=False):
    from nbdev.config import get_config
    from nbdev.quarto import refresh_quarto_yml, nbdev_sidebar
    from nbdev.doclinks import _build_modidx
    from nbdev.serve import proc_nbs
    cfg = get_config()
    refresh_quarto_yml()
    _build_modidx()
    nbdev_sidebar.__wrapped__(path=cfg.nbs_path)
    cache = proc_nbs(cfg.nbs_path, n_workers=0, force=True)
    _name_pages_like_quarto(cache)
    subprocess.run(['smalldocs', 'render', '--quiet', str(cache)], check=True)
    if check: subprocess.run(['smalldocs', 'check', str(cache)], check=True)
    site = cache/cfg.doc_path.name
    print(site)
    return site

if __name__ == '__main__': build(check='--check' in sys.argv)
