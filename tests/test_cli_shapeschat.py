"`d2i data shapeschat` as a process: byte-identical output for equal arguments, loadable by the PhotoChat loader, exit 2 on bad input."
import hashlib, json, os, subprocess, sys
from pathlib import Path
import pytest

CMD = [sys.executable, '-c', 'import sys; from d2i_lit.cli import main; sys.exit(main())', 'data']
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1'}

def run(*args):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=300)

def tree_hash(p: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(p.rglob('*')):
        if f.is_file(): h.update(str(f.relative_to(p)).encode()); h.update(f.read_bytes())
    return h.hexdigest()

def test_deterministic_and_loadable(tmp_path):
    a, b = tmp_path/'a', tmp_path/'b'
    for out in (a, b):
        r = run('shapeschat', '--n', 60, '--seed', 5, '--size', 16, '--out', out)
        assert r.returncode == 0, r.stderr
    assert tree_hash(a) == tree_hash(b)
    assert len(list((a/'images').glob('*.png'))) == 60
    assert [p.name for p in a.iterdir() if p.name.startswith('.')] == ['.lock']  # the writer's lock; no temporary leftovers
    from d2i_lit.data import load_photochat
    ds = load_photochat(a/'dialogs.json', images_dir=a/'images')
    assert len(ds) == 60 and all(d.image_path is not None for d in ds)
    assert all(d.turns[-1].speaker == d.sharer for d in ds)
    assert {d.extra['shapes']['pattern'] for d in ds} <= {'solo', 'sharer_last', 'sharer_first', 'turns_only'}
    meta = json.loads((a/'meta.json').read_text())
    assert (meta['n'], meta['seed'], meta['size']) == (60, 5, 16)
    # a rerun into the same folder replaces it with the same bytes; another seed changes them
    assert run('shapeschat', '--n', 60, '--seed', 5, '--out', a).returncode == 0
    assert tree_hash(a) == tree_hash(b)
    assert run('shapeschat', '--n', 60, '--seed', 6, '--out', b).returncode == 0
    assert tree_hash(a) != tree_hash(b)

def test_size(tmp_path):
    r = run('shapeschat', '--n', 3, '--size', 24, '--out', tmp_path/'s')
    assert r.returncode == 0, r.stderr
    from PIL import Image
    assert Image.open(next((tmp_path/'s'/'images').glob('*.png'))).size == (24, 24)

@pytest.mark.parametrize('args,msg', [
    (['mnist', '--out', 'X'], "unknown dataset 'mnist'"),
    (['shapeschat', '--n', '0', '--out', 'X'], "argument --n: must be an integer in [1, 10000000], got '0'"),
    (['shapeschat', '--n', 'ten', '--out', 'X'], "argument --n: must be an integer in [1, 10000000], got 'ten'"),
    (['shapeschat', '--size', '2', '--out', 'X'], 'size'),
    (['shapeschat', '--n', '5'], 'the following arguments are required: --out'),
    ([], 'name a dataset; choose from: shapeschat, photochat'),
])
def test_bad_args_exit_2(tmp_path, args, msg):
    r = run(*[str(tmp_path/a) if a == 'X' else a for a in args])
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert msg in r.stderr
    assert 'Traceback' not in r.stderr
    assert not (tmp_path/'X').exists()

def test_refuses_to_overwrite_other_folders(tmp_path):
    (tmp_path/'mine.txt').write_text('keep me')
    r = run('shapeschat', '--n', 5, '--out', tmp_path)
    assert r.returncode == 2 and 'refusing' in r.stderr
    assert (tmp_path/'mine.txt').read_text() == 'keep me'

def test_options_put_what_they_say(tmp_path):
    "--split valid, --patterns and --image-style: held-out records, one pattern, shifted dialog images beside default caption images."
    base, valid, turns, shifted = (tmp_path/k for k in ('base', 'valid', 'turns', 'shifted'))
    assert run('shapeschat', '--n', 40, '--seed', 2, '--out', base).returncode == 0
    r = run('shapeschat', '--n', 40, '--seed', 2, '--split', 'valid', '--out', valid)
    assert r.returncode == 0, r.stderr
    bd, vd = (json.loads((p/'dialogs.json').read_text()) for p in (base, valid))
    assert all(x['photo_id'].startswith('shapeschat/valid/') for x in vd) and sum(x['dialogue'] == y['dialogue'] for x, y in zip(bd, vd)) == 0
    assert json.loads((valid/'meta.json').read_text())['split'] == 'valid' and 'split' not in json.loads((base/'meta.json').read_text())
    assert run('shapeschat', '--n', 40, '--seed', 2, '--patterns', 'turns_only', '--out', turns).returncode == 0
    assert {x['shapes']['pattern'] for x in json.loads((turns/'dialogs.json').read_text())} == {'turns_only'}
    assert run('shapeschat', '--n', 40, '--seed', 2, '--image-style', 'shifted', '--out', shifted).returncode == 0
    assert (shifted/'dialogs.json').read_bytes() == (base/'dialogs.json').read_bytes()
    assert all((shifted/'caption_images'/f.name).read_bytes() == f.read_bytes() for f in (base/'images').glob('*.png'))
    assert all((shifted/'images'/f.name).read_bytes() != f.read_bytes() for f in (base/'images').glob('*.png'))
    caps = [json.loads(l) for l in (shifted/'captions.jsonl').read_text().splitlines()]
    assert all(c['image'].startswith('caption_images/') and (shifted/c['image']).exists() for c in caps)

@pytest.mark.parametrize('args,msg', [
    (['--split', 'test'], "argument --split: invalid choice: 'test'"),
    (['--patterns', 'turns'], "unknown ShapesChat pattern 'turns'"),
    (['--patterns', 'solo=x'], "'solo=x' is not NAME or NAME=WEIGHT"),
    (['--image-style', 'sepia'], "argument --image-style: invalid choice: 'sepia'"),
])
def test_bad_options_exit_2(tmp_path, args, msg):
    r = run('shapeschat', '--n', 5, '--out', tmp_path/'X', *args)
    assert r.returncode == 2 and msg in r.stderr and 'Traceback' not in r.stderr, (r.returncode, r.stderr)
    assert not (tmp_path/'X').exists()
