"A fine-tuning run killed with SIGKILL and resumed from the latest checkpoint ends with the weights of an uninterrupted run."
import os, signal, subprocess, sys, time, textwrap
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import sys, time
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from fastai.callback.core import Callback
    from d2i_lit.core import set_seed, set_threads
    from d2i_lit.shapeschat import write_shapeschat, load_shapeschat
    from d2i_lit.datasets import DialogImageDataset, text_image_dls
    from d2i_lit.backbones import shapes_backbone
    from d2i_lit.finetune import finetune
    data, out, resume, ema = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[3] == 'latest', sys.argv[4] == 'ema'
    set_threads(1)
    class Slow(Callback):  # gives the parent time to kill mid-run
        def after_step(self): time.sleep(0.15)
    set_seed(0)
    bb = shapes_backbone()
    ds = DialogImageDataset(load_shapeschat(data), 'hash', 16)
    dls = text_image_dls(ds, bs=4, seed=0)  # 24 dialogs / 4: an epoch is 6 steps, so the run crosses epochs
    learn = finetune(bb, dls, steps=10, lr=1e-3, out=out, checkpoint_every=2, keep=2, ema=0.9 if ema else None,
                     resume='latest' if resume else None, cbs=[Slow()])
    sd = {k: v.detach().contiguous() for k,v in bb.noise_predictor.state_dict().items()}
    if ema: sd.update({'ema.' + k: v for k,v in learn.ema.average.shadow.items()})
    save_file(sd, out/'weights.safetensors')
''')

def _run(tmp, *args, **kw):
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', D2I_THREADS='1')
    return subprocess.Popen([sys.executable, str(tmp/'train.py'), *map(str, args)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **kw)

def _ckpts(out): return sorted(p.name for p in (out/'ckpts').iterdir() if p.name.startswith('checkpoint-'))

@pytest.fixture(scope='module')
def data(tmp_path_factory):
    from d2i_lit.shapeschat import write_shapeschat
    tmp = tmp_path_factory.mktemp('ft')
    write_shapeschat(tmp/'sc', n=24, seed=0)
    (tmp/'train.py').write_text(SCRIPT)
    return tmp

@pytest.mark.parametrize('ema', ['ema'])  # without EMA: the in-notebook resume tests (07b_checkpoint, 07c_finetune)
def test_sigkill_resume_matches_uninterrupted(data, ema):
    tmp = data
    ref = _run(tmp, tmp/'sc', tmp/f'ref-{ema}', 'fresh', ema)
    out = tmp/f'killed-{ema}'
    p = _run(tmp, tmp/'sc', out, 'fresh', ema)
    deadline = time.time() + 120
    while not (out/'ckpts'/'checkpoint-4').exists():
        assert p.poll() is None, p.stdout.read()
        assert time.time() < deadline
        time.sleep(0.02)
    os.kill(p.pid, signal.SIGKILL); p.wait()
    assert p.returncode == -signal.SIGKILL
    before = _ckpts(out)
    last = max(int(n.split('-')[1]) for n in before)
    assert 4 <= last < 10, before                       # killed mid-run
    assert before == sorted(f'checkpoint-{s}' for s in (last - 2, last) if s > 0)  # keep=2
    assert not (out/'final').exists()
    r = _run(tmp, tmp/'sc', out, 'latest', ema); o, _ = r.communicate(timeout=300)
    assert r.returncode == 0, o
    assert ref.wait(timeout=300) == 0, ref.stdout.read()
    assert _ckpts(out) == ['checkpoint-10', 'checkpoint-8']
    assert not any(p.name.endswith('.tmp') for p in (out/'ckpts').iterdir())
    assert ('ema.safetensors' in os.listdir(out/'ckpts'/'checkpoint-10')) == (ema == 'ema')
    a, b = load_file(out/'weights.safetensors'), load_file(tmp/f'ref-{ema}'/'weights.safetensors')
    assert a.keys() == b.keys()
    for k in a: torch.testing.assert_close(a[k], b[k], atol=1e-6, rtol=0, msg=k)
    steps = [int(l.split(',')[0]) for l in (out/'log.csv').read_text().splitlines()[1:]]
    assert steps == list(range(1, 11))
