"""Run folders through the `d2i` command line, as processes (issue 13, classes 2, 3 and 6): a folder belongs to one run
(a second `d2i generate` while the first runs, a fresh `d2i finetune` into a finished run's folder: exit 2, one line,
nothing changed); a damaged newest checkpoint falls back to the one before with one warning line; images that are not
finite (NaN weights) are left out of the manifest and counted, and a run with none finite exits 2."""
import json, os, shutil, subprocess, sys, time
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}

def d2i(*args): return [sys.executable, '-m', 'd2i_lit.cli', *map(str, args)]

def run(*args, timeout=300): return subprocess.run(d2i(*args), env=ENV, capture_output=True, text=True, timeout=timeout)

def one_line_error(r, name, alone=True):
    "The error line of a refused command: exit 2, no traceback, one error line, last (`alone`: the only line on stderr)."
    assert r.returncode == 2, (r.returncode, r.stderr[-3000:])
    lines = r.stderr.strip().splitlines()
    errs = [l for l in lines if l.startswith(f'd2i {name}: error: ')]
    assert len(errs) == 1 and lines[-1] == errs[0] and 'Traceback' not in r.stderr, r.stderr
    if alone: assert len(lines) == 1, r.stderr
    return errs[0]

def tree(d:Path)->dict:
    "Every file under `d` with its size, mode and modification time."
    return {str(p.relative_to(d)): (s.st_size, s.st_mode, s.st_mtime_ns) for p in sorted(d.rglob('*')) for s in [p.lstat()]}

def manifest(out): return [json.loads(l) for l in (Path(out)/'manifest.jsonl').read_text().splitlines()]

def weights(folder):
    "Every tensor of every safetensors file under `folder`, keyed by file and name."
    return {f'{p.relative_to(folder)}:{k}': v for p in sorted(Path(folder).rglob('*.safetensors')) for k,v in load_file(p).items()}

# --- generate ----------------------------------------------------------------------------------------------------

GEN = ['generate', '--model', 'tiny-sd', '--style', 'hash', '--scheduler', 'ddim', '--seed', '0']

def test_second_generate_into_a_running_folder_is_refused(tmp_path):
    out, n = tmp_path/'out', 40
    a = subprocess.Popen(d2i(*GEN, '--sample-steps', '4', '--batch-size', '2', '--limit', n, '--out', out), env=ENV,
                         stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.time()
    while not (out/'manifest.rank0.jsonl').exists():  # the first run holds the folder and is generating
        assert a.poll() is None, a.communicate()[1][-3000:]
        assert time.time() - t0 < 240; time.sleep(0.05)
    b = run(*GEN, '--sample-steps', '4', '--batch-size', '2', '--limit', n, '--out', out)
    assert a.poll() is None, 'the first run finished before the second tried: make it longer'
    assert 'in use by another d2i process' in one_line_error(b, 'generate')
    _, err = a.communicate(timeout=600)
    assert a.returncode == 0, err[-3000:]
    from d2i_lit.data import load_sample
    recs = manifest(out)
    assert [r['id'] for r in recs] == [d.dialogue_id for d in load_sample()[:n]]  # complete, in order, no record lost
    assert all((out/r['file']).exists() for r in recs) and not list(out.glob('manifest.rank*'))

@pytest.fixture(scope='module')
def nan_models(tmp_path_factory):
    "Tiny Stable Diffusion folders: one whose noise predictor is all NaN, one whose text encoder has a NaN token ('the')."
    from d2i_lit.backbones import tiny_backbone
    d = tmp_path_factory.mktemp('nan')
    bb = tiny_backbone('sd')
    with torch.no_grad():
        for p in bb.noise_predictor.parameters(): p.fill_(float('nan'))
    bb.save_pretrained(d/'all')
    bb = tiny_backbone('sd')
    tok = bb.tokenizer.convert_tokens_to_ids('the</w>')
    with torch.no_grad(): bb.text_encoder.get_input_embeddings().weight[tok] = float('nan')
    bb.save_pretrained(d/'the')
    return d, tok

def test_all_images_nan_exits_2(nan_models, tmp_path):
    d, _ = nan_models
    r = run(*GEN, '--model', d/'all', '--sample-steps', '2', '--batch-size', '2', '--limit', '3', '--out', tmp_path/'out')
    assert 'all 3 images are not finite' in one_line_error(r, 'generate', alone=False)  # (loading a folder: transformers' progress bars before it)
    assert manifest(tmp_path/'out') == [] and not list((tmp_path/'out').glob('images/*'))

def test_some_images_nan_are_left_out_and_counted(nan_models, tmp_path):
    d, tok = nan_models
    from d2i_lit.backbones import Backbone
    from d2i_lit.data import load_sample
    from d2i_lit.pipeline import DialogToImagePipeline
    n = 8
    bb = Backbone.from_pretrained(d/'the')
    ds = load_sample()[:n]
    with_the = {dl.dialogue_id for dl,p in zip(ds, DialogToImagePipeline(bb).prompts(ds)) if tok in bb.tokenizer(p).input_ids}
    assert 0 < len(with_the) < n
    r = run(*GEN, '--model', d/'the', '--sample-steps', '2', '--batch-size', '2', '--limit', n, '--out', tmp_path/'out')
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [l for l in r.stderr.splitlines() if 'not finite' in l]
    assert len(warn) == 1 and f'{len(with_the)} of {n} images are not finite' in warn[0], r.stderr
    recs = manifest(tmp_path/'out')
    assert {x['id'] for x in recs} == {dl.dialogue_id for dl in ds} - with_the
    assert sorted(p.name for p in (tmp_path/'out/images').iterdir()) == sorted(x['file'].split('/')[-1] for x in recs)

# --- finetune ----------------------------------------------------------------------------------------------------

FT = ['finetune', '--model', 'shapes', '--style', 'hash', '--batch-size', '8', '--lr', '1e-3', '--ema', '0', '--seed', '0']

@pytest.fixture(scope='module')
def runs(tmp_path_factory):
    "ShapesChat data, a finished 4-step run with checkpoints 2 and 4, and an uninterrupted 6-step reference."
    from d2i_lit.shapeschat import write_shapeschat
    d = tmp_path_factory.mktemp('ft')
    write_shapeschat(d/'sc', n=24, seed=0)
    for steps, name in ((4, 'base'), (6, 'ref')):
        r = run(*FT, '--data', d/'sc', '--steps', steps, '--checkpoint-every', '2', '--keep', '3', '--out', d/name)
        assert r.returncode == 0, r.stderr[-3000:]
    assert sorted(p.name for p in (d/'base/ckpts').iterdir()) == ['checkpoint-2', 'checkpoint-4']
    return d

def test_fresh_finetune_into_a_finished_run_is_refused(runs, tmp_path):
    out = tmp_path/'run'; shutil.copytree(runs/'base', out); before = tree(out)
    r = run(*FT, '--data', runs/'sc', '--steps', '4', '--out', out)
    assert 'pass --resume latest' in one_line_error(r, 'finetune')
    assert tree(out) == before  # no truncated log, no overwritten config, model or checkpoints

def test_refusal_under_two_processes_does_not_hang(runs, tmp_path):
    "Process 0 refuses; the launcher stops process 1 (which holds no lock and checks nothing) instead of leaving it waiting."
    out = tmp_path/'run'; shutil.copytree(runs/'base', out); before = tree(out)
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29583',
                        '-m', 'd2i_lit.cli', *FT, '--data', str(runs/'sc'), '--steps', '4', '--out', str(out)],
                       env=ENV, capture_output=True, text=True, timeout=180)
    assert r.returncode != 0
    assert sum(l.startswith('d2i finetune: error: ') and 'pass --resume latest' in l for l in r.stderr.splitlines()) == 1, r.stderr[-3000:]
    assert tree(out) == before

def damage(ck:Path, how:str):
    if how == 'truncated': f = ck/'model.safetensors'; f.write_bytes(f.read_bytes()[:len(f.read_bytes())//2])
    elif how == 'garbage_state': (ck/'state.json').write_text('{"step": 4, "epoch": [')
    elif how == 'missing_rng': (ck/'rng.safetensors').unlink()

@pytest.mark.parametrize('how', ['truncated', 'garbage_state', 'missing_rng'])
def test_damaged_latest_checkpoint_falls_back(runs, tmp_path, how):
    out = tmp_path/'run'; shutil.copytree(runs/'base', out)
    damage(out/'ckpts/checkpoint-4', how)
    r = run(*FT, '--data', runs/'sc', '--steps', '6', '--checkpoint-every', '2', '--keep', '3', '--resume', 'latest', '--out', out)
    assert r.returncode == 0, r.stderr[-3000:]
    warn = [l for l in r.stderr.splitlines() if 'damaged' in l]
    assert len(warn) == 1 and 'checkpoint-4' in warn[0] and warn[0].rstrip().endswith('checkpoint-2'), r.stderr
    assert 'Traceback' not in r.stderr
    steps = [int(l.split(',')[0]) for l in (out/'log.csv').read_text().splitlines()[1:]]
    assert steps == list(range(1, 7))  # steps 3 and 4 redone from checkpoint 2, not repeated in the log
    assert sorted(p.name for p in (out/'ckpts').iterdir()) == ['checkpoint-2', 'checkpoint-4', 'checkpoint-6']  # 4 rewritten whole
    a, b = weights(out/'final'), weights(runs/'ref'/'final')
    assert a.keys() == b.keys() and a
    for k in a: torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)

def test_no_good_checkpoint_is_one_line(runs, tmp_path):
    out = tmp_path/'run'; shutil.copytree(runs/'base', out)
    damage(out/'ckpts/checkpoint-4', 'truncated'); damage(out/'ckpts/checkpoint-2', 'garbage_state')
    before = tree(out)
    r = run(*FT, '--data', runs/'sc', '--steps', '6', '--checkpoint-every', '2', '--resume', 'latest', '--out', out)
    line = one_line_error(r, 'finetune', alone=False)  # (diffusers warns about `Backbone.to` before it)
    assert 'no usable checkpoint' in line and 'checkpoint-4' in line
    after, kept = tree(out), lambda t: {k: v for k, v in t.items() if k not in ('texts.jsonl', 'config.json')}
    assert kept(after) == kept(before)  # log, checkpoints, model
    cfg = json.loads((out/'config.json').read_text())
    base = json.loads((runs/'base'/'config.json').read_text())
    assert cfg['out'] == str(out) and (cfg['run'], cfg['weights'], cfg['lr']) == (base['run'], base['weights'], base['lr'])  # the moved folder's place
