"""The data path at PhotoChat's size: `d2i data photochat` and `d2i finetune`'s data loading on 10,000+ records.

The bundled real PhotoChat records (207) are replicated with new dialogue and photo ids to N records; their photos are a
few dozen distinct Flickr-sized JPEGs (1024x768, noisy so that they do not compress to nothing: 150-300 KB) served under
every record's own name by `tests/photo_server.py` on 127.0.0.1. Measured:

1. `d2i data photochat` at each N (a fresh process each): wall time, photos/s, and the peak resident memory of the
   process tree (polled every 0.1 s): memory should stay flat in N and time grow linearly;
2. at the largest N, a fetch killed with SIGTERM midway and run again: the rerun asks the server only for what is
   missing, and the final folder equals the uninterrupted run's (same names, same bytes);
3. the training data path at 512 px (`DialogImageDataset` + `text_image_dls`, as `d2i finetune` builds it): the
   dataset's construction (linearization and the up-front image check) at each N, and the loader's images/s with
   `num_workers` 0 and 2, against the images/s one GPU step would consume.

`python bench/bench_data_scale.py --sizes 1000 10000 --out /tmp/data_scale` (about 15 minutes on 2 cores)."""
import argparse, io, json, os, random, shutil, signal, subprocess, sys, threading, time
from pathlib import Path
import numpy as np
from PIL import Image
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT/'tests'))
from photo_server import PhotoServer
from d2i_lit.core import asset_path

ENV = {**os.environ, 'no_proxy': '*', 'NO_PROXY': '*', 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(ROOT)}
MiB = 2**20

def photo_bodies(n:int=40, seed:int=0)->list[bytes]:
    "`n` distinct JPEGs of 1024x768: a smooth random picture plus Gaussian noise (sigma 8-18), quality 85."
    g, out = np.random.default_rng(seed), []
    for i in range(n):
        base = Image.fromarray((g.random((24, 32, 3))*255).astype('uint8')).resize((1024, 768), Image.BICUBIC)
        a = np.asarray(base, dtype=np.float32) + g.normal(0, 8 + 10*i/max(1, n-1), (768, 1024, 3))
        buf = io.BytesIO(); Image.fromarray(a.clip(0, 255).astype('uint8')).save(buf, 'JPEG', quality=85)
        out.append(buf.getvalue())
    return out

def records(n:int)->list[dict]:
    "`n` PhotoChat records: the bundled real ones repeated, each copy with a new dialogue id and photo id."
    real = json.loads(asset_path('photochat_test_00_first207.json').read_text())
    out = []
    for i in range(n):
        r = dict(real[i % len(real)])
        r['dialogue_id'], r['photo_id'] = 100000 + i, f'train/{i:08x}{i % 7:x}'
        out.append(r)
    return out

def serve(recs:list[dict], bodies:list[bytes])->PhotoServer:
    "A photo server answering `/p/{photo id}.jpg` for every record with one of `bodies`; sets each record's `photo_url`."
    path = lambda r: f"/p/{r['photo_id'].rsplit('/', 1)[-1]}.jpg"
    srv = PhotoServer({path(r): dict(body=bodies[i % len(bodies)]) for i,r in enumerate(recs)}) # bodies shared, not copied
    for r in recs: r['photo_url'] = srv.url(path(r))
    return srv

def _tree_rss(pid:int)->int:
    "Resident bytes of `pid` and its descendants (from /proc)."
    kids, total = {}, 0
    for p in Path('/proc').iterdir():
        if p.name.isdigit():
            try: kids.setdefault(int((p/'stat').read_text().rsplit(')', 1)[1].split()[1]), []).append(int(p.name))
            except (OSError, IndexError, ValueError): pass
    todo = [pid]
    while todo:
        q = todo.pop(); todo += kids.get(q, [])
        try: lines = (Path('/proc')/str(q)/'status').read_text().splitlines()
        except OSError: continue
        total += next((int(l.split()[1]) * 1024 for l in lines if l.startswith('VmRSS')), 0)
    return total

def run_measured(cmd:list, kill_when=None, poll:float=0.1)->dict:
    "Run `cmd`, polling its process tree's memory (`kill_when()` true: SIGTERM); wall time, peak RSS, return code, output."
    t0, peak = time.perf_counter(), 0
    p = subprocess.Popen(cmd, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    killed = False
    while p.poll() is None:
        peak = max(peak, _tree_rss(p.pid))
        if kill_when is not None and not killed and kill_when(): p.send_signal(signal.SIGTERM); killed = True
        time.sleep(poll)
    out, err = p.communicate()
    return dict(seconds=time.perf_counter() - t0, peak_rss=peak, rc=p.returncode, killed=killed, stdout=out, stderr=err[-2000:])

def fetch_cmd(f:Path, out:Path, workers:int)->list:
    return [sys.executable, '-m', 'd2i_lit.cli', 'data', 'photochat', str(f), '--out', str(out),
            '--workers', str(workers), '--timeout', '30', '--retries', '2', '--no-progress']

def folder_state(d:Path)->dict:
    "File name -> size and a hash of its bytes, for the photos of a folder (report.json and temporaries left out)."
    import hashlib
    return {p.name: hashlib.sha1(p.read_bytes()).hexdigest() for p in d.iterdir() if p.suffix in ('.jpg', '.png')}

def bench_fetch(n:int, work:Path, bodies, workers:int)->dict:
    "An uninterrupted `d2i data photochat` of `n` records."
    recs = records(n)
    with serve(recs, bodies) as srv:
        f = work/f'photochat_{n}.json'; f.write_text(json.dumps(recs))
        out = work/f'photos_{n}'; shutil.rmtree(out, ignore_errors=True)
        r = run_measured(fetch_cmd(f, out, workers))
        assert r['rc'] == 0, r['stderr']
        got = len(folder_state(out))
        return dict(records=n, photos=got, seconds=round(r['seconds'], 2), photos_per_s=round(got/r['seconds'], 1),
                    peak_rss_mib=round(r['peak_rss']/MiB, 1), requests=sum(srv.counts.values()), out=str(out))

def bench_kill_resume(n:int, work:Path, bodies, workers:int, reference:Path)->dict:
    "A fetch of `n` records killed (SIGTERM) when half the photos are there, then run again; compared with `reference`."
    recs = records(n)
    with serve(recs, bodies) as srv:
        f = work/f'photochat_{n}_kill.json'; f.write_text(json.dumps(recs))
        out = work/f'photos_{n}_kill'; shutil.rmtree(out, ignore_errors=True)
        half = lambda: out.is_dir() and sum(1 for _ in out.iterdir()) >= n // 2
        r1 = run_measured(fetch_cmd(f, out, workers), kill_when=half)
        present, before = len(folder_state(out)), sum(srv.counts.values())
        left = sorted(p.name for p in out.iterdir() if p.name.endswith('.tmp'))
        r2 = run_measured(fetch_cmd(f, out, workers))
        asked = sum(srv.counts.values()) - before
        assert r2['rc'] == 0, r2['stderr']
        same = folder_state(out) == folder_state(reference)
    return dict(records=n, killed_after_s=round(r1['seconds'], 1), killed_rc=r1['rc'], present_at_kill=present,
                temporaries_left=len(left), resumed_requests=asked, missing_at_kill=n - present,
                resumed_s=round(r2['seconds'], 1), final_equals_uninterrupted=same)

def bench_dataset(n:int, photos:Path, work:Path)->dict:
    "`DialogImageDataset` of `n` records at 512 px as `d2i finetune` builds it (CLIP's budget): load, linearize, check."
    code = f"""
import json, time, sys, warnings
from d2i_lit.data import load_photochat
from d2i_lit.linearize import TextFormat, clip_tokenizer
texts = lambda d: [x.text for x in TextFormat('hash', 75).linearize(d, clip_tokenizer())] # CLIP's budget, oldest turns dropped
from d2i_lit.datasets import DialogImageDataset
clip_tokenizer() # built once (cached): not part of the scaling
t = time.perf_counter()
ds = load_photochat({str(work/f'photochat_{n}.json')!r}, images_dir={str(photos)!r})
t_load = time.perf_counter() - t; t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    pairs = DialogImageDataset(ds, 'hash', 512, texts=texts, check=False)
t_text = time.perf_counter() - t; t = time.perf_counter()
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    pairs = DialogImageDataset(ds, 'hash', 512, texts=texts, progress=False)
t_check = time.perf_counter() - t
print(json.dumps(dict(pairs=len(pairs), load_s=round(t_load, 2), linearize_s=round(t_text, 2), dataset_with_check_s=round(t_check, 2))))
"""
    r = run_measured([sys.executable, '-c', code])
    assert r['rc'] == 0, r['stderr']
    return dict(records=n, peak_rss_mib=round(r['peak_rss']/MiB, 1), **json.loads(r['stdout'].strip().splitlines()[-1]))

def bench_loader(photos:Path, work:Path, n:int, workers:int, batches:int, bs:int)->dict:
    "Images/s of `text_image_dls` over a `DialogImageDataset` at 512 px with `workers` processes (first batch excluded)."
    code = f"""
import json, time, sys, warnings
from d2i_lit.data import load_photochat
from d2i_lit.linearize import TextFormat, clip_tokenizer
texts = lambda d: [x.text for x in TextFormat('hash', 75).linearize(d, clip_tokenizer())] # CLIP's budget, oldest turns dropped
from d2i_lit.datasets import DialogImageDataset, text_image_dls
ds = load_photochat({str(work/f'photochat_{n}.json')!r}, images_dir={str(photos)!r})
with warnings.catch_warnings():
    warnings.simplefilter('ignore')
    pairs = DialogImageDataset(ds, 'hash', 512, texts=texts, check=False)
dls = text_image_dls(pairs, bs={bs}, seed=0, num_workers={workers}, device='cpu')
it = iter(dls.train); next(it); t = time.perf_counter()
for _ in range({batches}): texts, x = next(it)
dt = time.perf_counter() - t
rate = round({batches}*{bs}/dt, 1)
print(json.dumps(dict(num_workers={workers}, batch={bs}, batches={batches}, images_per_s=rate, shape=list(x.shape))))
"""
    r = run_measured([sys.executable, '-c', code])
    assert r['rc'] == 0, r['stderr']
    return dict(peak_rss_mib=round(r['peak_rss']/MiB, 1), **json.loads(r['stdout'].strip().splitlines()[-1]))

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--sizes', type=int, nargs='+', default=[1000, 10000])
    ap.add_argument('--out', default='/tmp/d2i_data_scale'); ap.add_argument('--workers', type=int, default=16)
    ap.add_argument('--distinct', type=int, default=40); ap.add_argument('--batches', type=int, default=8)
    ap.add_argument('--bs', type=int, default=16)
    ap.add_argument('--skip', nargs='*', default=[], choices=['fetch', 'resume', 'dataset', 'loader'])
    a = ap.parse_args(argv)
    work = Path(a.out); work.mkdir(parents=True, exist_ok=True)
    bodies = photo_bodies(a.distinct)
    res = dict(machine=dict(cores=os.cpu_count(), load_before=os.getloadavg()[0]),
               photos=dict(distinct=len(bodies), kb_min=min(map(len, bodies))//1024,
                           kb_max=max(map(len, bodies))//1024))
    if 'fetch' not in a.skip: res['fetch'] = [bench_fetch(n, work, bodies, a.workers) for n in a.sizes]
    big = max(a.sizes)
    if 'resume' not in a.skip:
        res['kill_resume'] = bench_kill_resume(big, work, bodies, a.workers, work/f'photos_{big}')
    if 'dataset' not in a.skip: res['dataset'] = [bench_dataset(n, work/f'photos_{n}', work) for n in a.sizes]
    if 'loader' not in a.skip:
        res['loader'] = [bench_loader(work/f'photos_{big}', work, big, w, a.batches, a.bs) for w in (0, 2)]
    res['machine']['load_after'] = os.getloadavg()[0]
    print(json.dumps(res, indent=1))
    (work/'data_scale.json').write_text(json.dumps(res, indent=1))

if __name__ == '__main__': main()
