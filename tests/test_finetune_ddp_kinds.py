"Every backbone kind fine-tunes on 2 CPU processes (gloo, torchrun): both ranks end bit-identical and match one process with the same global batch; UniDiffuser through `d2i finetune`, its result loading in diffusers' `UniDiffuserPipeline`."
import json, os, subprocess, sys, textwrap
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file

ENV = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', D2I_THREADS='1')
SCRIPT = textwrap.dedent('''
    import sys
    from pathlib import Path
    from safetensors.torch import save_file
    from d2i_lit.core import set_seed, set_threads
    from d2i_lit.shapeschat import load_shapeschat
    from d2i_lit.datasets import text_image_dls
    from d2i_lit.backbones import tiny_backbone
    from d2i_lit.finetune import finetune, dialog_dataset
    from d2i_lit.callbacks import trainable
    from d2i_lit.learner import rank_world
    kind, data, out = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])
    set_threads(1); set_seed(0)
    bb = tiny_backbone(kind)
    dls = text_image_dls(dialog_dataset(load_shapeschat(data), bb), bs=4, seed=0)  # global batch 4
    learn = finetune(bb, dls, steps=2, lr=1e-3, ema=None)
    rank, world = rank_world()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k,v in trainable(learn.model).items()}, out/f'{kind}-rank{rank}-of-{world}.safetensors')
''')

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    from d2i_lit.shapeschat import write_shapeschat
    d = tmp_path_factory.mktemp('sc')
    write_shapeschat(d/'sc', n=8, seed=0)
    (d/'train.py').write_text(SCRIPT)
    return d

def run(cmd, port): 
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', str(port), *cmd],
                       env=ENV, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

@pytest.mark.parametrize('kind,port', [('sd', 29541), ('pixart', 29542), ('unidiffuser', 29543)])
def test_two_processes_match_one(shapes, kind, port):
    from d2i_lit.backbones import tiny_backbone
    out = shapes/'out'
    run([str(shapes/'train.py'), kind, str(shapes/'sc'), str(out)], port)
    r1 = subprocess.run([sys.executable, str(shapes/'train.py'), kind, str(shapes/'sc'), str(out)], env=ENV, capture_output=True, text=True, timeout=600)
    assert r1.returncode == 0, r1.stderr[-3000:]
    a, b, one = (load_file(out/f'{kind}-{f}.safetensors') for f in ('rank0-of-2', 'rank1-of-2', 'rank0-of-1'))
    init = {f'net.{k}': v for k,v in tiny_backbone(kind).noise_predictor.state_dict().items()}
    assert set(a) == set(one) and set(a) <= set(init)
    if kind == 'unidiffuser': assert not any(k.startswith(('net.transformer.pos_embed.', 'net.text_out.')) for k in a)  # frozen: unused
    assert max(float((one[k] - init[k]).abs().max()) for k in one) > 1e-4  # training moved the weights
    for k in a: assert torch.equal(a[k], b[k]), k  # both ranks bit-identical
    # = one process with the same global batch: same data, noise and averaged gradients; only the float order of the reductions
    # differs, which Adam can turn into up-to-lr moves on near-zero gradients
    rel = sum(float((a[k] - one[k]).abs().sum()) for k in a) / sum(float((one[k] - init[k]).abs().sum()) for k in a)
    assert rel < 1e-3, rel
    for k in a: torch.testing.assert_close(a[k], one[k], atol=2e-3, rtol=0, msg=k)

def test_cli_unidiffuser_two_processes(shapes, tmp_path):
    run(['-m', 'd2i_lit.cli', 'finetune', '--model', 'tiny-unidiffuser', '--data', str(shapes/'sc'), '--out', str(tmp_path/'run'),
         '--steps', '2', '--batch-size', '4', '--lora-rank', '2', '--num-workers', '1'], 29544)
    cfg = json.loads((tmp_path/'run/config.json').read_text())
    assert (cfg['run']['processes'], cfg['lora_rank'], cfg['num_workers'], cfg['model']) == (2, 2, 1, 'tiny-unidiffuser')
    from diffusers import UniDiffuserPipeline
    pipe = UniDiffuserPipeline.from_pretrained(tmp_path/'run/final')
    img = pipe(prompt='# a red circle', num_inference_steps=2, height=32, width=32, generator=torch.Generator().manual_seed(0), output_type='pt').images
    assert img.shape == (1, 3, 32, 32) and torch.isfinite(img).all()
