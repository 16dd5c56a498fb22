"""`d2i evaluate` on PhotoChat as users have it: the PhotoChat JSON file (`test_00.json`), photos under `photos/<photo_id>.jpg`,
images from `d2i generate` with its manifest; Inception weights in torch-fidelity's layout (random: the real file cannot be
downloaded here) and a tiny CLIP folder; the reference set, KID, CLIP scores, per-topic numbers and the one-line errors."""
import json, os, shutil, subprocess, sys
from pathlib import Path
import numpy as np, pytest
from PIL import Image

ENV = dict(os.environ, HF_HUB_OFFLINE='1', D2I_THREADS='1', OMP_NUM_THREADS='1')
PHOTOCHAT = Path('/work/shared/data/photochat/test_00.first207.json')
N = 10

def d2i(*args, timeout=600):
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)

@pytest.fixture(scope='module')
def pc(tmp_path_factory):
    root = tmp_path_factory.mktemp('pc')
    src = PHOTOCHAT if PHOTOCHAT.is_file() else Path(__import__('d2i_lit.core', fromlist=['x']).asset_path('photochat_test_00_first207.json'))
    shutil.copy(src, root/'test_00.json') # the name PhotoChat ships the file under
    recs = json.loads((root/'test_00.json').read_text())
    rng = np.random.default_rng(0)
    for r in recs[:N + 6]: # photos for more dialogs than are evaluated: they must not enter the reference set
        p = root/'photos'/f"{r['photo_id']}.jpg"; p.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(rng.integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(p, quality=95)
    r = d2i('generate', '--model', 'tiny-sd', '--dialogs', root/'test_00.json', '--limit', N, '--sample-steps', 2, '--scheduler', 'ddim', '--out', root/'gen')
    assert r.returncode == 0, r.stderr[-2000:]
    from d2i_lit.metrics import write_random_inception_weights, write_tiny_clip
    write_random_inception_weights(root/'pt_inception-2015-12-05-random.pth')
    write_tiny_clip(root/'clip')
    return root

def test_no_weights_is_an_error(pc):
    r = d2i('evaluate', '--generated', pc/'gen', '--real', pc/'photos', '--dialogs', pc/'test_00.json', '--metrics', 'fid,is', '--out', pc/'x.json')
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0, r.stderr
    assert 'pt_inception-2015-12-05-6726825d.pth' in r.stderr and '--inception-weights' in r.stderr
    assert not (pc/'x.json').exists()

def test_photochat_evaluation(pc):
    out = pc/'metrics.json'
    r = d2i('evaluate', '--generated', pc/'gen', '--real', pc/'photos', '--dialogs', pc/'test_00.json', '--metrics', 'fid,is,clip,clip_t',
            '--inception-weights', pc/'pt_inception-2015-12-05-random.pth', '--clip-model', pc/'clip', '--splits', 2,
            '--device', 'cpu', '--batch-size', 4, '--kid-subset-size', 5, '--cache', pc/'cache', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res['reference']['n'] == N and res['fid']['n_real'] == N and res['fid']['n_generated'] == N # only the evaluated dialogs' photos
    assert 'bicubic' in res['preprocessing'] and '299x299' in res['preprocessing'] and 'same for generated and reference' in res['preprocessing']
    assert 'biased' in res['fid']['warning'] and 'warning: FID on' in r.stderr
    assert res['kid']['subset_size'] == 5 and np.isfinite(res['kid']['mean'])
    assert res['is']['n'] == N and res['is']['classes'] == 1008
    assert res['clip']['n'] == N and -1 <= res['clip']['mean'] <= 1
    for k in ('description', 'dialog'): assert res['clip_t'][k]['n'] == N and 0 <= res['clip_t'][k]['mean'] <= 100
    assert (res['device'], res['dtype'], res['batch_size']) == ('cpu', 'fp32', 4)
    # per topic: the sample's photo_topic, N per topic adding up, every metric present
    from d2i_lit.data import load_photochat
    from d2i_lit.linearize import photo_topic
    topics = [photo_topic(d.photo_description) for d in load_photochat(pc/'test_00.json')[:N]]
    bt = res['by_topic']
    assert {t: v['n'] for t, v in bt.items()} == {t: topics.count(t) for t in set(topics)}
    for t, v in bt.items():
        assert {'clip', 'clip_t_description', 'clip_t_dialog', 'is'} <= set(v)
        assert (v['fid'] is None) == (v['n'] < 2 or v['n_real'] < 2)
    # the overall CLIP-T is the N-weighted mean of the per-topic ones
    assert abs(sum(v['n'] * v['clip_t_dialog'] for v in bt.values()) / N - res['clip_t']['dialog']['mean']) < 1e-9
    # the same run against the library's own numbers: KID from the features, as torchmetrics computes it
    from d2i_lit.metrics import evaluate_dirs
    again = evaluate_dirs(pc/'gen', pc/'photos', 'fid', pc/'pt_inception-2015-12-05-random.pth', cache=pc/'cache', dialogs=pc/'test_00.json',
                          batch_size=3, kid_subset_size=5, device='cpu')
    assert again['fid']['real_stats_cached'] is True
    assert abs(again['fid']['value'] - res['fid']['value']) < 1e-6 * max(1, abs(res['fid']['value'])) # batch size does not matter
    assert abs(again['kid']['mean'] - res['kid']['mean']) < 1e-7  # generated features at another batch size: float32 sums

def test_bf16_autocast_close_to_fp32(pc):
    from d2i_lit.metrics import evaluate_dirs
    kw = dict(clip_model=str(pc/'clip'), dialogs=pc/'test_00.json', device='cpu', batch_size=8)
    a = evaluate_dirs(pc/'gen', pc/'photos', 'clip,clip_t', **kw)
    b = evaluate_dirs(pc/'gen', pc/'photos', 'clip,clip_t', dtype='bf16', **kw)
    assert b['dtype'] == 'bf16'
    assert abs(a['clip']['mean'] - b['clip']['mean']) < 0.05 and abs(a['clip_t']['dialog']['mean'] - b['clip_t']['dialog']['mean']) < 5

@pytest.mark.parametrize('args, msg', [
    (['--dialogs', '{root}/nope.json'], 'nope.json'),
    (['--dialogs', '{root}/test_00.json', '--real', '{root}/gen'], 'no usable photo for any of the'),
    (['--metrics', 'clip_t', '--dialogs', '{root}/test_00.json'], '--clip-model'),
    (['--feature-net', 'resnet', '--dialogs', '{root}/test_00.json'], 'resnet'),
])
def test_errors_one_line(pc, args, msg):
    base = {'--generated': '{root}/gen', '--real': '{root}/photos', '--inception-weights': '{root}/pt_inception-2015-12-05-random.pth'}
    for a, v in zip(args[::2], args[1::2]): base[a] = v
    r = d2i('evaluate', *[x.format(root=pc) for kv in base.items() for x in kv], '--out', pc/'err.json', timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    assert r.stderr.strip().count('\n') == 0 and msg in r.stderr, r.stderr
