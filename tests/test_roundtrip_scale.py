"""`d2i roundtrip` at paper scale, on the tiny tier: COCO Karpathy / NoCaps / folder inputs in their real layouts,
2 processes (torchrun, gloo) equal to 1, resume after SIGKILL equal to an uninterrupted run, `--analyze` from the files alone."""
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest
from PIL import Image

ENV = dict(os.environ, HF_HUB_OFFLINE='1', D2I_THREADS='1', OMP_NUM_THREADS='1', PYTHONUNBUFFERED='1')
MOD = ['-m', 'd2i_lit.cli', 'roundtrip']
TINY = ['--captioner', 'tiny', '--generator', 'tiny', '--k', '2', '--sample-steps', '2', '--boot', '50', '--similarity', 'tiny-clip', '--batch-size', '2']

def d2i(*args, timeout=300):
    return subprocess.run([sys.executable, *MOD, *map(str, args)], capture_output=True, text=True, env=ENV, timeout=timeout)

def cands(out): return [json.loads(l) for l in (Path(out)/'candidates.jsonl').read_text().splitlines()]

def pixels(out): return {r['file']: np.asarray(Image.open(Path(out)/r['file'])) for r in cands(out)}

def _img(path, i):
    path.parent.mkdir(parents=True, exist_ok=True)
    a = np.random.default_rng(i).integers(0, 256, (24, 32, 3), dtype=np.uint8) # not square: the resize is exercised
    Image.fromarray(a).save(path, quality=95)

@pytest.fixture(scope='module')
def coco(tmp_path_factory):
    "`dataset_coco.json` (Karpathy) with 6 test + 1 train images under val2014/, and `nocaps_val_4500_captions.json` with 3 images."
    root = tmp_path_factory.mktemp('coco')
    words = 'a man riding a horse on a beach|two dogs play in the snow|a plate of food with broccoli|a red bus on a street|a cat on a sofa|a boy with a kite|a train'.split('|')
    imgs = []
    for i, w in enumerate(words):
        fn = f'COCO_val2014_{i:012d}.jpg'; _img(root/'coco'/'val2014'/fn, i)
        imgs.append(dict(filepath='val2014', filename=fn, imgid=i, split='train' if i == 6 else 'test', cocoid=1000 + i,
                         sentids=[2*i, 2*i+1], sentences=[dict(tokens=w.split(), raw=w.capitalize() + '.', imgid=i, sentid=2*i),
                                                           dict(tokens=w.split()[::-1], raw=' '.join(w.split()[::-1]), imgid=i, sentid=2*i+1)]))
    (root/'dataset_coco.json').write_text(json.dumps(dict(images=imgs, dataset='coco')))
    ni = [dict(id=i, file_name=f'{h}.jpg', height=24, width=32, open_images_id=h, coco_url=f'https://x/{h}.jpg', domain='in-domain')
          for i, h in enumerate(['0013ea2087020901', '0023bc34c8d62d3a', '00284bfa56a4d1b0'])]
    for r in ni: _img(root/'nocaps'/'validation'/r['file_name'], 10 + r['id'])
    ann = [dict(image_id=r['id'], id=10*r['id'] + j, caption=f'{words[r["id"]]} {j}') for r in ni for j in range(2)]
    (root/'nocaps_val_4500_captions.json').write_text(json.dumps(dict(licenses=[], info={}, images=ni, annotations=ann)))
    return root

@pytest.fixture(scope='module')
def reference(coco, tmp_path_factory):
    "An uninterrupted 1-process i2t2i run on the Karpathy test split."
    out = tmp_path_factory.mktemp('ref')/'out'
    r = d2i('--direction', 'i2t2i', *TINY, '--data', coco/'dataset_coco.json', '--images', coco/'coco', '--split', 'test', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    return out

def test_karpathy_run_writes_everything(reference):
    out = reference
    assert sorted(p.name for p in out.iterdir()) == ['.lock', 'candidates.jsonl', 'images', 'items.jsonl', 'rank.png', 'run.json', 'scores.json']
    cs = cands(out)
    assert [(c['id'], c['candidate']) for c in cs] == [(str(1000 + i), j) for i in range(6) for j in range(2)] # test split only, in file order
    for c in cs: # every candidate's PNG is saved and readable by PIL, at the generator's size
        assert Image.open(out/c['file']).format == 'PNG' and Image.open(out/c['file']).size == (64, 64)
    items = [json.loads(l) for l in (out/'items.jsonl').read_text().splitlines()]
    assert items[0]['references'] == ['A man riding a horse on a beach.', 'beach a on horse a riding man a']
    s = json.loads((out/'scores.json').read_text())
    assert (s['n'], s['k'], s['direction'], s['caption_kw']) == (6, 2, 'i2t2i', dict(top_p=0.9, repetition_penalty=1.1))
    assert len(s['rank_analysis']['curve']) == 2 and s['quality'] == 'CIDEr-D of the caption'

def test_analyze_from_files_alone(reference, tmp_path):
    "`--analyze` on a copy of the folder (images deleted: not needed) gives the same scores without generating."
    import shutil
    from d2i_lit.roundtrip import analyze_roundtrip, cider_matrix, rank_analysis
    cp = tmp_path/'copy'; shutil.copytree(reference, cp); shutil.rmtree(cp/'images'); (cp/'scores.json').unlink()
    r = d2i('--analyze', cp, '--boot', 50, timeout=120)
    assert r.returncode == 0, r.stderr
    a, b = json.loads((cp/'scores.json').read_text()), json.loads((reference/'scores.json').read_text())
    assert a == b
    # independently: the curve is the mean CIDEr-D of the rank-r candidate, ranks by image cosine
    cs = cands(reference); items = [json.loads(l) for l in (reference/'items.jsonl').read_text().splitlines()]
    caps = [[c['caption'] for c in cs if c['id'] == it['id']] for it in items]
    cos = np.array([[c['image_cos'] for c in cs if c['id'] == it['id']] for it in items])
    q = cider_matrix(caps, [it['references'] for it in items])
    order = np.argsort(-cos, axis=1, kind='stable')
    np.testing.assert_allclose(a['rank_analysis']['curve'], np.take_along_axis(q, order, 1).mean(0), atol=1e-12)
    assert a['rank_analysis'] == rank_analysis(cos, q, n_boot=50, seed=0)

def test_two_processes_equal_one(reference, coco, tmp_path):
    out = tmp_path/'out'
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29541', *MOD,
                        '--direction', 'i2t2i', *TINY, '--data', str(coco/'dataset_coco.json'), '--images', str(coco/'coco'), '--out', str(out)],
                       capture_output=True, text=True, env=ENV, timeout=400)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert not list(out.glob('*.rank*'))
    assert cands(out) == cands(reference)
    a, b = pixels(out), pixels(reference)
    assert a.keys() == b.keys() and all(np.array_equal(a[f], b[f]) for f in b)
    assert json.loads((out/'scores.json').read_text()) == json.loads((reference/'scores.json').read_text())

def test_resume_after_sigkill(reference, coco, tmp_path):
    out = tmp_path/'out'
    args = ['--direction', 'i2t2i', *TINY, '--data', coco/'dataset_coco.json', '--images', coco/'coco', '--out', out]
    p = subprocess.Popen([sys.executable, *MOD, *map(str, args)], env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part, t0 = out/'candidates.rank0.jsonl', time.time()
    while p.poll() is None and time.time() - t0 < 240:
        if part.exists() and len(part.read_text().splitlines()) >= 2: break # one item (k = 2 lines) finished
        time.sleep(0.05)
    assert p.poll() is None, 'the run finished before it could be killed'
    p.send_signal(signal.SIGKILL); p.wait()
    done = [json.loads(l) for l in part.read_text().splitlines() if l.endswith('}')]
    assert 2 <= len(done) < 12
    stamps = {r['file']: (out/r['file']).stat().st_mtime_ns for r in done}
    r = d2i(*args)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {f: (out/f).stat().st_mtime_ns for f in stamps} == stamps # finished items were not redone
    assert cands(out) == cands(reference)
    a, b = pixels(out), pixels(reference)
    assert all(np.array_equal(a[f], b[f]) for f in b)
    r = d2i(*[a if a != '2' or i != args.index('--k') + 1 else '3' for i, a in enumerate(map(str, args))], timeout=120)
    assert r.returncode == 2 and 'other settings' in r.stderr # a rerun with other settings is refused, not mixed in

def test_nocaps_t2i2t(coco, tmp_path):
    out = tmp_path/'nc'
    r = d2i('--direction', 't2i2t', *TINY, '--data', coco/'nocaps_val_4500_captions.json', '--images', coco/'nocaps'/'validation', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    items = [json.loads(l) for l in (out/'items.jsonl').read_text().splitlines()]
    assert [it['id'] for it in items] == ['0', '1', '2'] and items[1]['references'] == ['two dogs play in the snow 0', 'two dogs play in the snow 1']
    assert items[1]['input'] == 'two dogs play in the snow 0'
    s = json.loads((out/'scores.json').read_text())
    assert s['recon'] == 'CIDEr-D of the caption' and s['quality'].startswith('image cosine with the real image')
    assert all(-1 <= c['quality'] <= 1 for c in cands(out))

def test_folder_of_images_one_bad(coco, tmp_path):
    "A plain folder (no references: reconstruction only); an unreadable image is skipped and reported, the rest run."
    import shutil
    shutil.copytree(coco/'nocaps'/'validation', tmp_path/'imgs'); (tmp_path/'imgs'/'0000broken.jpg').write_bytes(b'not a jpeg')
    out = tmp_path/'f'
    r = d2i('--direction', 'i2t2i', *TINY, '--data', tmp_path/'imgs', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    s = json.loads((out/'scores.json').read_text())
    assert s['n'] == 3 and s['skipped'] == 1 and 'rank_analysis' not in s and 'quality_mean' not in s
    bad = [json.loads(l) for l in (out/'skipped.jsonl').read_text().splitlines()]
    assert [b['id'] for b in bad] == ['0000broken'] and 'skipped' in r.stdout

@pytest.mark.parametrize('write, extra, msg', [
    (lambda p: p.write_text(json.dumps(dict(images=[dict(filename='x.jpg', split='test')]))), ['--format', 'karpathy'], "images[0]: missing field 'sentences'"),
    (lambda p: p.write_text(json.dumps(dict(images=[dict(id=0, file_name='x.jpg')]))), ['--format', 'coco'], "field 'annotations' must be a list"),
    (lambda p: p.write_text(json.dumps(dict(images=[dict(id=0, file_name='x.jpg')], annotations=[dict(image_id=0)]))), [], "annotations[0]: fields 'image_id' and 'caption'"),
    (lambda p: p.write_text(json.dumps([1, 2])), [], 'neither COCO Karpathy'),
    (lambda p: p.write_text('{"images": ['), [], 'not JSON'),
])
def test_bad_formats_one_line(tmp_path, write, extra, msg):
    f = tmp_path/'dataset_coco.json'; write(f)
    r = d2i('--direction', 'i2t2i', *TINY, '--data', f, '--out', tmp_path/'o', *extra, timeout=120)
    assert r.returncode == 2, r.stderr
    assert r.stderr.strip().count('\n') == 0 and str(f) in r.stderr and msg in r.stderr, r.stderr

def test_wrong_split_and_image_folder(coco, tmp_path):
    r = d2i('--direction', 'i2t2i', *TINY, '--data', coco/'dataset_coco.json', '--images', coco/'coco', '--split', 'val', '--out', tmp_path/'o', timeout=120)
    assert r.returncode == 2 and "no images in split 'val'" in r.stderr and 'test, train' in r.stderr
    r = d2i('--direction', 'i2t2i', *TINY, '--data', coco/'dataset_coco.json', '--out', tmp_path/'o', timeout=120) # images not beside the file
    assert r.returncode == 2 and 'give --images' in r.stderr
