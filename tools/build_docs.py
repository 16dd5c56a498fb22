"""Build the docs site offline: nbdev's processed notebooks rendered by smalldocs.

`nbdev_docs` (nbdev's own command) needs Quarto, which cannot be installed without internet. This script runs the
same steps as `nbdev_proc_nbs` (refresh `nbdev.yml`, rebuild the index, write `sidebar.yml`, process the notebooks
into `_proc/`) without nbdev's attempt to download Quarto, then renders `_proc/` with smalldocs into `_proc/_docs/`.

    python tools/build_docs.py [--check]     # --check also runs `smalldocs check` and fails on its findings

Links to the library's names. nbdev's `add_links` processor is switched off in `settings.ini` (`skip_procs`): it
writes absolute links to `doc_host` (a site that need not exist where the docs are read) and writes Markdown links
into the signatures' code blocks, where they show as raw text. `link_names` does its work instead: a name in
backticks links to its entry with a link relative to the page, so the built site works offline and wherever it is
served; a signature's docments comments link their names through a highlighted HTML block.
"""
import html, json, re, subprocess, sys
from pathlib import Path

_re_backticks = re.compile(r'(?<!\[)`([^`\s]+?)(\(\))?`(?!\]\()')  # nbdev's pattern, minus names already inside a link

def _name_pages_like_quarto(cache):
    "Rename each processed notebook to its `output-file` (as Quarto names its page), since smalldocs does not read that key."
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

def symbol_pages(modidx):
    "Name -> `page.html#anchor` (relative to the site's root) from nbdev's index `_modidx.py`, as nbdev looks names up."
    ns = {}
    exec(Path(modidx).read_text(), ns)
    full, short = {}, {}
    for mod, syms in ns['d']['syms'].items():
        for name, (page, _py) in syms.items():
            full[name] = page
            short.setdefault(name.removeprefix(mod + '.'), page)  # a bare name: the first module that defines it
            short.setdefault(name.removeprefix(mod.rsplit('.', 1)[0] + '.'), page)  # `module.name`
    return {**short, **full}

_re_heading = re.compile(r'^#{1,6}\s+(.+?)\s*(?:\{([^}]*)\})?\s*$', re.M)

def page_anchors(cache):
    "Page -> the ids of its headings (as smalldocs makes them: Pandoc's rules, or an explicit `{#id}`)."
    from smalldocs.markdown import pandoc_id
    anchors = {}
    for nb_path in sorted(cache.rglob('*.ipynb')):
        texts = []
        for cell in json.loads(nb_path.read_text())['cells']:
            if cell['cell_type'] == 'markdown': texts.append(''.join(cell['source']))
            texts += [''.join(o['data']['text/markdown']) for o in cell.get('outputs', []) if 'text/markdown' in o.get('data', {})]
        ids = set()
        for m in _re_heading.finditer(re.sub(r'^```.*?^```', '', '\n'.join(texts), flags=re.M | re.S)):
            own = re.search(r'#([\w.:-]+)', m.group(2) or '')
            ids.add(own.group(1) if own else pandoc_id(m.group(1).replace('`', '')))
        anchors[nb_path.relative_to(cache).with_suffix('.html').as_posix()] = ids
    return anchors

def documented(pages, anchors):
    "Keep the names whose entry is a heading on its page; a method shown only with its class links to the class."
    out = {}
    for name, target in pages.items():
        page, _, anchor = target.partition('#')
        if anchor in anchors.get(page, ()): out[name] = target
        elif '.' in anchor and anchor.split('.')[0] in anchors.get(page, ()): out[name] = f"{page}#{anchor.split('.')[0]}"
    return out

def _linker(pages, prefix):
    "A function that links one backticked name (a regex match) to its entry, or leaves it as it was."
    def link(m, html_out=False):
        page = pages.get(m.group(1))
        if page is None: return m.group(0)
        label = m.group(1) + (m.group(2) or '')
        if html_out: return f'<a href="{html.escape(prefix + page)}">{html.escape(label)}</a>'
        return f'[`{label}`]({prefix}{page})'
    return link

def _signature_html(code, link):
    "A show_doc signature as highlighted HTML whose comments link the names they mention (Markdown links in code show raw)."
    from smalldocs.highlight import highlight
    hl = highlight(code.strip('\n'), 'python')
    hl = re.sub(r'<span class="co">.*?</span>', lambda c: _re_backticks.sub(lambda m: link(m, True), c.group(0)), hl, flags=re.S)
    return ('```{=html}\n<div class="sourceCode signature"><pre class="sourceCode python">'
            f'<code class="sourceCode python">{hl}</code></pre></div>\n```')

def link_markdown(md, link, signatures=False):
    "Link backticked names outside code (as nbdev's `linkify`); with `signatures`, python fences become linked HTML."
    out, fence, in_fence = [], [], False
    for line in md.split('\n'):
        if line.startswith('```'):
            if in_fence and fence[0] == '```python' and signatures: out.append(_signature_html('\n'.join(fence[1:]), link))
            elif in_fence: out.extend(fence + [line])
            in_fence = not in_fence
            fence = [line] if in_fence else []
        elif in_fence: fence.append(line)
        else: out.append(line if line.startswith('    ') else _re_backticks.sub(link, line))
    return '\n'.join(out + fence)

def link_names(cache, pages):
    "Link the library's names in every processed notebook (markdown cells and markdown outputs), relative to its page."
    for nb_path in sorted(cache.rglob('*.ipynb')):
        depth = len(nb_path.relative_to(cache).parts) - 1
        link = _linker(pages, '../' * depth)
        nb = json.loads(nb_path.read_text())
        for cell in nb['cells']:
            src = ''.join(cell['source'])
            if cell['cell_type'] == 'markdown': cell['source'] = link_markdown(src, link)
            for o in cell.get('outputs', []):
                md = o.get('data', {}).get('text/markdown')
                if md is None: continue
                md = md if isinstance(md, str) else ''.join(md)
                o['data']['text/markdown'] = link_markdown(md, link, signatures='show_doc(' in src)
        nb_path.write_text(json.dumps(nb))

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
    link_names(cache, documented(symbol_pages(cfg.lib_path/'_modidx.py'), page_anchors(cache)))
    subprocess.run(['smalldocs', 'render', '--quiet', str(cache)], check=True)
    if check: subprocess.run(['smalldocs', 'check', str(cache)], check=True)
    site = cache/cfg.doc_path.name
    print(site)
    return site

if __name__ == '__main__': build(check='--check' in sys.argv)
