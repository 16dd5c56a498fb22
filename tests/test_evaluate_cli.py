"""`d2i evaluate` as a process: JSON on stdout and in the output file, one-line errors with exit status 2."""
import json, os, subprocess, sys
from pathlib import Path
import pytest

CMD = [sys.executable, '-c', 'import sys; from d2i_lit.cli import main; sys.exit(main())', 'evaluate']

def run(*args, cache):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1', 'D2I_CACHE': str(cache)}
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, env=env, timeout=300)

@pytest.fixture(scope='module')
def dirs(tmp_path_factory):
    "A ShapesChat folder (real) and a generated folder: the first 24 dialogs' images re-rendered with other jitter, plus a manifest."
    from d2i_lit.shapeschat import write_shapeschat, render_object
    from d2i_lit.core import atomic_save_image
    root = tmp_path_factory.mktemp('eval')
    write_shapeschat(root/'real', n=48, seed=0)
    recs = json.loads((root/'real'/'dialogs.json').read_text())
    gen = root/'gen'; gen.mkdir()
    rows = []
    for i, r in enumerate(recs[:24]):
        atomic_save_image(render_object(r['shapes']['sharer_object'], size=16, seed=1000 + i), gen/f'{i:03d}.png')
        rows.append(dict(id=r['dialogue_id'], style='hash' if i % 2 else 'plain', seed=0, prompt='...', file=f'{i:03d}.png'))
    (gen/'manifest.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    (root/'empty').mkdir()
    (root/'bad.pth').write_bytes(b'not a checkpoint')
    return root

def test_evaluate_writes_json(dirs):
    out = dirs/'res'/'metrics.json'
    p = run('--generated', dirs/'gen', '--real', dirs/'real', '--metrics', 'fid,is,attr', '--out', out, '--splits', '4', cache=dirs/'cache')
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    assert json.loads(out.read_text()) == res
    assert res['fid']['n_generated'] == 24 and res['fid']['n_real'] == 24 # the photos of the 24 dialogs evaluated, not all 48 and res['fid']['resolution'] == 16
    assert 'shapeschat-attribute-classifier' in res['fid']['feature_net'] and res['fid']['relative_only'] is True
    assert res['fid']['value'] > 0 and res['fid']['real_stats_cached'] is False
    assert res['is']['n'] == 24 and res['is']['splits'] == 4 and 1 <= res['is']['mean'] <= 24
    # the generated images draw each dialog's sharer object: a perfect classifier reads them all
    assert res['attr']['attr_acc'] == 1.0 and res['attr']['coherence'] == 1.0 and res['attr']['n'] == 24
    assert set(res['attr']['by_style']) == {'hash', 'plain'}
    assert not [f for f in out.parent.iterdir() if f.name != 'metrics.json'] # no temporary files left behind
    p2 = run('--generated', dirs/'gen', '--real', dirs/'real', '--metrics', 'fid', '--out', dirs/'res2.json', cache=dirs/'cache')
    assert p2.returncode == 0, p2.stderr
    res2 = json.loads(p2.stdout)
    assert res2['fid']['real_stats_cached'] is True and res2['fid']['value'] == pytest.approx(res['fid']['value'], rel=1e-9)

@pytest.mark.parametrize('args, msg', [
    (['--generated', '{root}/nope', '--real', '{root}/real'], 'no such folder'),
    (['--generated', '{root}/empty', '--real', '{root}/real'], 'no images'),
    (['--generated', '{root}/gen', '--real', '{root}/empty'], 'no images'),
    (['--generated', '{root}/gen'], 'required'),
    (['--generated', '{root}/gen', '--real', '{root}/real', '--inception-weights', '{root}/pt_inception.pth'], 'not found'),
    (['--generated', '{root}/gen', '--real', '{root}/real', '--inception-weights', '{root}/bad.pth'], 'cannot load Inception weights'),
    (['--generated', '{root}/gen', '--real', '{root}/real', '--metrics', 'fid,bleu'], 'bleu'),
    (['--generated', '{root}/gen', '--real', '{root}/real', '--metrics', 'clip'], '--clip-model'),
    (['--generated', '{root}/gen', '--real', '{root}/empty', '--metrics', 'attr'], 'dialogs.json'),
])
def test_evaluate_errors(dirs, args, msg):
    p = run(*[a.format(root=dirs) for a in args], cache=dirs/'cache')
    assert p.returncode == 2, (p.returncode, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith('d2i evaluate: error:') and msg in lines[0], p.stderr

@pytest.fixture(scope='module')
def inception_dirs(tmp_path_factory):
    "A weights file in torch-fidelity's format from a seeded random InceptionV3 (the real one cannot be downloaded), 4 real and 4 other images."
    from d2i_lit.metrics import write_random_inception_weights
    from d2i_lit.shapeschat import ATTRIBUTES, render_object
    from d2i_lit.core import atomic_save_image
    import numpy as np
    root = tmp_path_factory.mktemp('inception')
    write_random_inception_weights(root/'pt_inception-2015-12-05-random.pth', seed=0)
    r = np.random.default_rng(0)
    for name in ('real', 'gen'):
        for i in range(4):
            obj = {k: v[r.integers(len(v))] for k, v in ATTRIBUTES.items()}
            atomic_save_image(render_object(obj, size=16, seed=i), root/name/f'{i}.png')
    return root

def test_evaluate_inception_weights(inception_dirs):
    "`--inception-weights`: FID/IS on the 299-px InceptionV3 from a local file; a set against itself ~0, against another > 0."
    root, w = inception_dirs, inception_dirs/'pt_inception-2015-12-05-random.pth'
    p = run('--generated', root/'gen', '--real', root/'real', '--inception-weights', w, '--splits', '2', '--out', root/'other.json', cache=root/'cache')
    assert p.returncode == 0, p.stderr
    res = json.loads(p.stdout)
    fid, isc = res['fid'], res['is']
    assert fid['resolution'] == 299 and fid['n_generated'] == fid['n_real'] == 4
    assert fid['feature_net'].startswith('inception-v3-compat pool3') and w.name in fid['feature_net']
    assert fid['relative_only'] is True # not the standard TF weights (sha256 6726825d...)
    assert isc['classes'] == 1008 and isc['n'] == 4 and 1 <= isc['mean'] <= 2
    p2 = run('--generated', root/'real', '--real', root/'real', '--inception-weights', w, '--metrics', 'fid', '--out', root/'self.json', cache=root/'cache')
    assert p2.returncode == 0, p2.stderr
    res2 = json.loads(p2.stdout)
    assert res2['fid']['real_stats_cached'] is True
    assert fid['value'] > 0 and abs(res2['fid']['value']) < 1e-3 * fid['value'], (res2['fid']['value'], fid['value'])
