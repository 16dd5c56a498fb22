"`d2i roundtrip` as a process on the tiny tier: both directions write candidates, scores and a plot; bad arguments exit 2."
import json, os, subprocess, sys
import pytest
from PIL import Image

CMD = [sys.executable, '-c', 'import sys; from d2i_lit.cli import main; sys.exit(main())', 'roundtrip']
ENV = dict(os.environ, HF_HUB_OFFLINE='1', D2I_THREADS='1', OMP_NUM_THREADS='1')

def run(*args, timeout=300):
    return subprocess.run(CMD + [str(a) for a in args], capture_output=True, text=True, env=ENV, timeout=timeout)

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    d = tmp_path_factory.mktemp('data')
    lines = []
    for i, (col, cap) in enumerate([((230, 30, 30), 'a red square'), ((40, 90, 255), 'a blue square'), ((30, 200, 40), 'a green square')]):
        im = Image.new('RGB', (16, 16)); im.paste(col, (4, 4, 12, 12)); im.save(d/f'{i}.png')
        lines.append(json.dumps(dict(caption=cap, image=f'{i}.png')))
    (d/'captions.jsonl').write_text('\n'.join(lines) + '\n')
    return d

@pytest.mark.parametrize('direction', ['i2t2i', 't2i2t'])
def test_both_directions(data, tmp_path, direction):
    out = tmp_path/'out'
    r = run('--direction', direction, '--captioner', 'tiny', '--generator', 'tiny', '--k', 2, '--data', data, '--out', out,
            '--sample-steps', 2, '--boot', 50, '--similarity', 'tiny-clip')
    assert r.returncode == 0, r.stderr
    assert sorted(p.name for p in out.iterdir()) == ['.lock', 'candidates.jsonl', 'images', 'items.jsonl', 'rank.png', 'run.json', 'scores.json'] # no temporary files left
    assert sorted(p.name for p in (out/'images').iterdir()) == [f'{i}_{j}.png' for i in range(3) for j in range(2)]
    cands = [json.loads(l) for l in (out/'candidates.jsonl').read_text().splitlines()]
    assert len(cands) == 3 * 2 and {c['rank'] for c in cands} == {0, 1}
    s = json.loads((out/'scores.json').read_text())
    assert (s['direction'], s['n'], s['k']) == (direction, 3, 2)
    ra = s['rank_analysis']
    assert len(ra['curve']) == 2 and len(ra['curve_ci']) == 2
    assert (out/'rank.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    assert direction in r.stdout

def test_deterministic(data, tmp_path):
    outs = []
    for n in (1, 2):
        r = run('--direction', 'i2t2i', '--captioner', 'tiny', '--generator', 'tiny', '--k', 2, '--data', data, '--out', tmp_path/str(n),
                '--sample-steps', 2, '--boot', 10, '--similarity', 'pixels', '--limit', 2, '--batch', n) # batch size must not matter
        assert r.returncode == 0, r.stderr
        outs.append((tmp_path/str(n)/'candidates.jsonl').read_text())
    assert outs[0] == outs[1]

@pytest.mark.parametrize('args, msg', [
    (['--direction', 'sideways'], 'invalid choice'),
    (['--k', 0], "argument --k: must be an integer in [1, 1000], got '0'"),
    (['--data', '/nonexistent/captions.jsonl'], 'no such caption file'),
    (['--captioner', '/nonexistent/blip'], 'not found locally'),
])
def test_bad_args_exit_2(data, tmp_path, args, msg):
    base = dict(zip(['--direction', '--captioner', '--generator', '--k', '--data', '--out'], ['i2t2i', 'tiny', 'tiny', 2, data, tmp_path/'o']))
    for a, v in zip(args[::2], args[1::2]): base[a] = v
    r = run(*[x for kv in base.items() for x in kv], timeout=120)
    assert r.returncode == 2, (r.returncode, r.stderr)
    assert msg in r.stderr
    assert not (tmp_path/'o').exists()

def test_missing_required(tmp_path):
    r = run('--direction', 'i2t2i', timeout=120)
    assert r.returncode == 2 and '--captioner is required' in r.stderr

@pytest.mark.parametrize('direction', ['i2t2i', 't2i2t'])
def test_cli_equals_in_memory(data, tmp_path, direction):
    "One engine: `d2i roundtrip` on disk gives the candidates and scores of `roundtrip()` in memory on the same items, models and seed."
    import numpy as np
    from d2i_lit.core import read_jsonl, set_threads
    from d2i_lit.options import RoundTripOptions
    from d2i_lit.roundtrip import _load_roundtrip_models, load_roundtrip_dir, load_roundtrip_items, roundtrip
    args = dict(direction=direction, captioner='tiny', generator='tiny', k=2, data=data, out=tmp_path/'out', sample_steps=2, seed=3,
                similarity='tiny-clip', batch_size=2)
    r = run(*[x for k, v in args.items() for x in (f"--{k.replace('_', '-')}", v)], '--boot', 10)
    assert r.returncode == 0, r.stderr
    disk = read_jsonl(tmp_path/'out'/'candidates.jsonl')
    set_threads(1)
    o = RoundTripOptions(**{**args, 'data': str(data), 'out': str(tmp_path/'unused')})
    items = load_roundtrip_items(o.data, o.format, o.images_dir, o.split, o.limit)
    caption_kw = dict(top_p=o.top_p, repetition_penalty=o.repetition_penalty)  # the CLI's sampling options
    mem = roundtrip(direction, _load_roundtrip_models(o)[1], items, k=2, seed=3, caption_kw=caption_kw)
    saved = load_roundtrip_dir(tmp_path/'out')
    assert [r['id'] for r in disk] == [it['id'] for it in items for _ in range(2)]
    assert [r['caption'] for r in disk] == [c for row in mem.captions for c in row] and saved.captions == mem.captions
    np.testing.assert_allclose(saved.recon, mem.recon, atol=1e-5)
    assert mem.quality is not None  # both directions have a quality here (references; the real image)
    np.testing.assert_allclose(saved.quality, mem.quality, atol=1e-5)
    assert saved.recon_name == mem.recon_name
