"""A rehearsal of the whole real job, through the command line only, as a researcher with weights and GPUs runs it —
here with tiny models saved in the real folder layout, two CPU processes, and photos served from 127.0.0.1:

1. `d2i data photochat` fetches the photos of real PhotoChat records (an Open Images style mirror, `--base-url`);
2. `torchrun --nproc_per_node 2 -m d2i_lit.cli finetune` fine-tunes a Stable Diffusion folder on them (one photo on
   disk is unreadable and is skipped with a report);
3. `torchrun --nproc_per_node 2 -m d2i_lit.cli generate` generates from the fine-tuned folder, sharded;
4. `d2i evaluate` scores the images against the photos of the same dialogs (InceptionV3 in torch-fidelity's layout,
   random weights here);
and what each step writes loads with the library a user would load it with (diffusers, json, PIL).
"""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from PIL import Image
sys.path.insert(0, str(Path(__file__).parent))
from photo_server import PhotoServer, jpeg
from d2i_lit.core import asset_path

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'OMP_NUM_THREADS': '1', 'D2I_THREADS': '1', 'no_proxy': '*', 'NO_PROXY': '*'}
N = 12  # real records; photo 5 is missing on the mirror (404)

def sh(*cmd, procs=1, port=29561, timeout=600):
    "Run `d2i ...` (or with `procs` > 1, `torchrun --nproc_per_node procs -m d2i_lit.cli ...`) and return its result."
    pre = ([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', str(procs), '--master_port', str(port)]
           if procs > 1 else [sys.executable])
    r = subprocess.run([*pre, '-m', 'd2i_lit.cli', *map(str, cmd)], capture_output=True, text=True, env=ENV, timeout=timeout)
    assert r.returncode == 0, f'{cmd[0]}: {r.stdout[-2000:]}\n{r.stderr[-4000:]}'
    return r

@pytest.fixture(scope='module')
def job(tmp_path_factory):
    d = tmp_path_factory.mktemp('job')
    recs = json.loads(asset_path('photochat_test_00_first207.json').read_text())[:N]
    (d/'test_00.json').write_text(json.dumps(recs))
    colours = [(200, 40, 40), (40, 200, 40), (40, 40, 200), (200, 200, 40)]
    routes = {f"/oi/{r['photo_id']}.jpg": dict(body=jpeg((96, 72), colours[i % 4])) for i,r in enumerate(recs) if i != 5}
    from d2i_lit.backbones import tiny_backbone
    tiny_backbone('sd').save_pretrained(d/'sd-tiny')   # a real Stable Diffusion folder layout, tiny weights
    from d2i_lit.metrics import write_random_inception_weights
    write_random_inception_weights(d/'pt_inception-2015-12-05.pth')
    with PhotoServer(routes) as srv:
        yield dict(d=d, recs=recs, srv=srv)

def test_whole_job(job):
    d, recs, srv = job['d'], job['recs'], job['srv']
    # 1. photos from the mirror: 11 fetched, 1 not found, named so that --images-dir pairs them
    sh('data', 'photochat', d/'test_00.json', '--out', d/'photos', '--base-url', srv.url('/oi'))  # with its progress bar
    rep = json.loads((d/'photos/report.json').read_text())
    assert rep['counts']['ok'] == N - 1 and rep['counts']['not_found'] == 1, rep['counts']
    photos = sorted((d/'photos').glob('*.jpg'))
    assert len(photos) == N - 1 and all(Image.open(p).size == (96, 72) for p in photos)
    (d/'photos'/photos[0].name).write_bytes(b'\xff\xd8 a photo cut short on a full disk')  # unreadable on disk: skipped

    # 2. fine-tune on 2 processes: 10 usable pairs (1 missing, 1 unreadable), reported, result loads in diffusers
    sh('finetune', '--model', d/'sd-tiny', '--data', d/'test_00.json', '--images-dir', d/'photos', '--style', 'hash',
       '--steps', 3, '--batch-size', 4, '--lr', 1e-3, '--out', d/'ft', procs=2, port=29561)
    cfg = json.loads((d/'ft/config.json').read_text())
    assert cfg['run']['processes'] == 2 and cfg['style'] == 'hash' and cfg['model'] == str(d/'sd-tiny'), cfg
    skipped = json.loads((d/'ft/skipped_images.json').read_text())
    assert skipped['n_pairs'] == N - 2 and skipped['n_skipped'] == 2, skipped
    assert any(photos[0].name in json.dumps(s) for s in skipped['skipped'])
    from diffusers import StableDiffusionPipeline
    pipe = StableDiffusionPipeline.from_pretrained(d/'ft/final', safety_checker=None)
    img = pipe('# hi # a photo of my dog', num_inference_steps=2, height=32, width=32, output_type='pt',
               generator=torch.Generator().manual_seed(0)).images
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()

    # 3. generate sharded on 2 processes: one image per dialog, one manifest
    sh('generate', '--model', d/'ft/final', '--dialogs', d/'test_00.json', '--sample-steps', 2, '--out', d/'gen', procs=2, port=29562)
    man = [json.loads(l) for l in (d/'gen/manifest.jsonl').read_text().splitlines()]
    assert sorted(m['id'] for m in man) == sorted(r['dialogue_id'] for r in recs)
    assert {Image.open(d/'gen'/m['file']).size for m in man} == {(64, 64)}  # the tiny folder's resolution

    # 4. evaluate against the photos of the evaluated dialogs (11 of 12 have one)
    r = sh('evaluate', '--generated', d/'gen', '--real', d/'photos', '--dialogs', d/'test_00.json', '--metrics', 'fid,is,kid',
           '--inception-weights', d/'pt_inception-2015-12-05.pth', '--out', d/'metrics.json')
    res = json.loads((d/'metrics.json').read_text())
    assert res['fid']['n_real'] == N - 2, res['fid']  # the missing and the unreadable photo: left out and listed
    assert sorted(s['reason'] == 'no photo' for s in res['reference']['skipped']) == [False, True], res['reference']
    assert 'no usable photo' in r.stderr
    assert all(torch.isfinite(torch.tensor(float(v))) for v in (res['fid']['value'], res['is']['mean'], res['kid']['mean'])), res
