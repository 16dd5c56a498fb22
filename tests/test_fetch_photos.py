"""`d2i data photochat` run as a process against a photo server the test starts on 127.0.0.1: photos (JPEG, PNG, a
redirect, a record of the older release without `photo_id`, two records sharing a photo), missing ones (404), one slow
past the timeout, one truncated body and one web page instead of a photo. Checks the folder, report.json, pairing by
`--images-dir`, and that reruns fetch nothing already there. No other address is ever contacted."""
import io, json, os, subprocess, sys
from pathlib import Path
import pytest
from PIL import Image
sys.path.insert(0, str(Path(__file__).parent))
from photo_server import PhotoServer, jpeg
from d2i_lit.core import asset_path
from d2i_lit.data import load_photochat, photo_stem
from d2i_lit.datasets import DialogImageDataset
from d2i_lit.photos import fetch_photos

ENV = {**os.environ, 'no_proxy': '*', 'NO_PROXY': '*', 'OMP_NUM_THREADS': '1'}  # never through a proxy: only 127.0.0.1
OLD_URL_STEM = '369716968_bde7e83418_o'

def d2i(*args, timeout=120):
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', 'data', 'photochat', *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)

@pytest.fixture
def corpus(tmp_path):
    "Eleven real PhotoChat records whose photos the server answers in every way a real network does."
    recs = json.loads(asset_path('photochat_test_00_first207.json').read_text())[:11]
    png = io.BytesIO(); Image.new('RGB', (40, 40), (10, 200, 30)).save(png, 'PNG')
    bodies = {0: jpeg(), 1: png.getvalue(), 2: jpeg((800, 600), (30, 30, 220)), 9: jpeg((50, 50), (90, 90, 90))}
    routes = {'/p/0.jpg': dict(body=bodies[0]), '/p/1.jpg': dict(body=bodies[1], type='image/png'), '/p/2.jpg': dict(body=bodies[2]),
              '/p/3.jpg': dict(location='/moved/3.jpg'), '/moved/3.jpg': dict(body=jpeg(colour=(1, 2, 250))),
              '/p/6.jpg': dict(body=jpeg(), delay=1.5),                  # slower than --timeout 0.5
              '/p/7.jpg': dict(body=bodies[2], truncate=1000),           # the connection drops after 1000 bytes
              '/p/8.jpg': dict(body=b'<html><body>This photo is no longer available</body></html>', type='text/html'),
              f'/flickr/{OLD_URL_STEM}.jpg': dict(body=bodies[9])}       # /p/4.jpg, /p/5.jpg: 404
    server = PhotoServer(routes)
    for i,r in enumerate(recs): r['photo_url'] = server.url(f'/p/{i}.jpg')
    del recs[9]['photo_id']; recs[9]['photo_url'] = server.url(f'/flickr/{OLD_URL_STEM}.jpg')  # the older release
    recs[10]['photo_id'], recs[10]['photo_url'] = recs[0]['photo_id'], recs[0]['photo_url']  # two dialogs, one photo
    f = tmp_path/'test_00.json'; f.write_text(json.dumps(recs, indent=2))
    stems = [photo_stem(r.get('photo_id', ''), r['photo_url']) for r in recs]
    with server: yield dict(file=f, server=server, recs=recs, stems=stems, bodies=bodies, out=tmp_path/'photos')

def test_fetch_resume_and_pair(corpus):
    f, srv, stems, out = corpus['file'], corpus['server'], corpus['stems'], corpus['out']
    out.mkdir(); (out/f'.{stems[0]}.x1y2.tmp').write_bytes(b'half a photo')  # left by a killed run
    (out/f'{stems[1]}.png').write_bytes(b'\x89PNG garbage')                 # a bad file under a final name: fetched again
    args = (f, '--out', out, '--timeout', 0.5, '--retries', 1, '--backoff', 0.01, '--workers', 4, '--no-progress')
    r = d2i(*args)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f'5 of 10 photos in {out} (5 fetched, 0 already present')
    rep = json.loads((out/'report.json').read_text())
    assert rep['counts'] == dict(ok=5, not_found=2, not_an_image=1, timed_out=1, failed=1)
    assert (rep['photos'], rep['dialogs'], rep['fetched'], rep['already_present']) == (10, 11, 5, 0)
    fail = {x['name']: x for x in rep['failures']}
    assert {s: fail[stems[i]]['status'] for i,s in [(4, 4), (5, 5), (6, 6), (7, 7), (8, 8)]} == \
        {4: 'not_found', 5: 'not_found', 6: 'timed_out', 7: 'failed', 8: 'not_an_image'}
    assert 'HTTP 404' in fail[stems[4]]['error'] and 'timed out after 0.5 s' in fail[stems[6]]['error']
    assert 'truncated body' in fail[stems[7]]['error'] and 'not an image' in fail[stems[8]]['error']
    assert [fail[stems[i]]['attempts'] for i in (4, 6, 7, 8)] == [1, 2, 2, 1]  # transient failures retried, final ones not
    assert fail[stems[4]]['dialogue_ids'] == [corpus['recs'][4]['dialogue_id']]
    # the folder: whole photos under their final names, nothing else
    assert sorted(p.name for p in out.iterdir() if p.name != '.lock') == sorted(
        [f'{stems[0]}.jpg', f'{stems[1]}.png', f'{stems[2]}.jpg', f'{stems[3]}.jpg', f'{OLD_URL_STEM}.jpg', 'report.json',
         'fetch.json', 'photos.jsonl'])
    # photos.jsonl names each photo's key: the file name reverses to the record's photo_id (or URL, the older release)
    assert {r['name']: r['key'] for r in map(json.loads, (out/'photos.jsonl').read_text().splitlines())} == \
        {**{stems[i]: corpus['recs'][i]['photo_id'] for i in range(4)}, OLD_URL_STEM: corpus['recs'][9]['photo_url']}
    assert (out/f'{stems[0]}.jpg').read_bytes() == corpus['bodies'][0]  # kept byte for byte
    assert Image.open(out/f'{stems[1]}.png').convert('RGB').getpixel((0, 0)) == (10, 200, 30)
    assert Image.open(out/f'{stems[3]}.jpg').convert('RGB').getpixel((5, 5))[2] > 240  # the redirect's target
    c = srv.counts
    assert (c['/p/0.jpg'], c['/p/3.jpg'], c['/moved/3.jpg'], c['/p/4.jpg'], c['/p/6.jpg'], c['/p/7.jpg'], c['/p/8.jpg'], c['/p/10.jpg']) == \
        (1, 1, 1, 1, 2, 2, 1, 0)  # the shared photo is fetched once
    # --images-dir pairs what was fetched, the older release by its URL's file name
    ds = load_photochat(f, images_dir=out)
    assert [d.image_path is not None for d in ds] == [True]*4 + [False]*5 + [True, True]
    pairs = DialogImageDataset(ds, 'ab', size=16)
    assert len(pairs) == 6 and len(pairs.skipped) == 5 and pairs[0][1].shape == (3, 16, 16)

    # a rerun asks only for what failed transiently; present photos and final failures are not asked for again
    before = dict(srv.counts)
    r = d2i(*args)
    assert r.returncode == 0, r.stderr
    rep2 = json.loads((out/'report.json').read_text())
    assert (rep2['fetched'], rep2['already_present'], rep2['known_failures'], rep2['counts']) == (0, 5, 3, rep['counts'])
    assert {k: v - before.get(k, 0) for k,v in srv.counts.items() if v != before.get(k, 0)} == {'/p/6.jpg': 2, '/p/7.jpg': 2}
    # the network recovers: the next run fetches exactly those two; the one after fetches nothing at all
    srv.routes['/p/6.jpg'] = dict(body=jpeg()); srv.routes['/p/7.jpg'] = dict(body=corpus['bodies'][2])
    r = d2i(*args)
    rep3 = json.loads((out/'report.json').read_text())
    assert (r.returncode, rep3['fetched'], rep3['counts']['ok'], rep3['counts']['timed_out'], rep3['counts']['failed']) == (0, 2, 7, 0, 0)
    before = dict(srv.counts)
    r = d2i(*args)
    assert r.returncode == 0 and dict(srv.counts) == before  # no request at all
    assert json.loads((out/'report.json').read_text())['fetched'] == 0

def test_max_side_and_mirror(corpus):
    "`max_side` downscales (longer side, aspect kept); `base_url` fetches `{base_url}/{photo_id}.jpg` from a mirror."
    srv, recs, stems, tmp = corpus['server'], corpus['recs'], corpus['stems'], corpus['out'].parent
    ds = load_photochat(corpus['file'])
    rep = fetch_photos(ds[2:3], tmp/'small', max_side=100, progress=False)
    assert rep['counts']['ok'] == 1 and Image.open(tmp/'small'/f'{stems[2]}.jpg').size == (100, 75)
    srv.routes[f"/oi/{recs[0]['photo_id']}.jpg"] = dict(body=corpus['bodies'][0])
    rep = fetch_photos([ds[0], ds[9]], tmp/'mirror', base_url=srv.url('/oi'), progress=False)
    assert rep['counts'] == dict(ok=1, not_found=0, not_an_image=0, timed_out=0, failed=1)
    assert 'needs a photo_id' in rep['failures'][0]['error']  # the older release has no photo_id to ask a mirror for
    assert (tmp/'mirror'/f'{stems[0]}.jpg').read_bytes() == corpus['bodies'][0]

def test_bad_input_one_line(tmp_path):
    r = d2i(tmp_path/'nope.json', '--out', tmp_path/'o')
    assert r.returncode == 2 and r.stderr.strip() == f'd2i data: error: {tmp_path/"nope.json"}: no such file or folder'
    (tmp_path/'bad.json').write_text('[{"dialogue": 3}]')
    r = d2i(tmp_path/'bad.json', '--out', tmp_path/'o')
    assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1 and "record 0" in r.stderr and 'field' in r.stderr
    r = d2i(tmp_path/'bad.json', '--out', tmp_path/'o', '--workers', 0)
    assert r.returncode == 2 and r.stderr.strip() == "d2i data: error: argument --workers: must be an integer in [1, 256], got '0'"

def test_killed_run_resumes(tmp_path):
    "SIGKILL in the middle of a run leaves only whole photos under final names; the next run fetches just the rest."
    import signal, time
    n = 12
    routes = {f'/s/{i}.jpg': dict(body=jpeg((300, 200), (20*i, 0, 0)), delay=0.4) for i in range(n)}
    recs = json.loads(asset_path('photochat_test_00_first207.json').read_text())[:n]
    with PhotoServer(routes) as srv:
        for i,r in enumerate(recs): r['photo_url'] = srv.url(f'/s/{i}.jpg')
        f = tmp_path/'train_00.json'; f.write_text(json.dumps(recs))
        out = tmp_path/'photos'
        args = [sys.executable, '-m', 'd2i_lit.cli', 'data', 'photochat', str(f), '--out', str(out), '--workers', '2', '--no-progress']
        p = subprocess.Popen(args, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 60
        while time.time() < deadline and len(list(out.glob('*.jpg'))) < 3: time.sleep(0.05)
        p.send_signal(signal.SIGKILL); p.wait()
        done = sorted(out.glob('*.jpg'))
        assert 3 <= len(done) < n and not (out/'report.json').exists()
        for x in done: Image.open(x).load()  # every photo under its final name is whole
        r = d2i(f, '--out', out, '--workers', 4, '--no-progress')
        rep = json.loads((out/'report.json').read_text())
        assert r.returncode == 0 and rep['counts']['ok'] == n
        assert (rep['already_present'], rep['fetched']) == (len(done), n - len(done))
        assert not list(out.glob('.*.tmp'))
        assert all(v <= 2 for v in srv.counts.values())  # at most the killed request and one more
