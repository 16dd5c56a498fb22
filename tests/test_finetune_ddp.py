"Two CPU processes (gloo; torchrun, which accelerate's `Accelerator(cpu=True)` picks up) fine-tune to identical weights, matching one process with the same global batch."
import os, subprocess, sys, textwrap, shutil
from pathlib import Path
import pytest, torch
from safetensors.torch import load_file

SCRIPT = textwrap.dedent('''
    import os, sys
    from pathlib import Path
    import torch
    from safetensors.torch import save_file
    from d2i_lit.core import set_seed, set_threads
    from d2i_lit.shapeschat import load_shapeschat
    from d2i_lit.datasets import DialogImageDataset, text_image_dls
    from d2i_lit.backbones import shapes_backbone
    from d2i_lit.finetune import finetune
    from d2i_lit.learner import rank_world
    data, out = Path(sys.argv[1]), Path(sys.argv[2])
    set_threads(1); set_seed(0)
    bb = shapes_backbone()
    dls = text_image_dls(DialogImageDataset(load_shapeschat(data), 'hash', 16), bs=8, seed=0)  # global batch 8
    finetune(bb, dls, steps=3, lr=1e-3, ema=None, cbs=[])
    rank, world = rank_world()
    out.mkdir(parents=True, exist_ok=True)
    save_file({k: v.detach().contiguous() for k,v in bb.noise_predictor.state_dict().items()}, out/f'rank{rank}-of-{world}.safetensors')
''')

def test_two_processes_match_one(tmp_path):
    from d2i_lit.shapeschat import write_shapeschat
    write_shapeschat(tmp_path/'sc', n=16, seed=0)
    (tmp_path/'train.py').write_text(SCRIPT)
    env = dict(os.environ, HF_HUB_OFFLINE='1', OMP_NUM_THREADS='1', D2I_THREADS='1')
    # `accelerate launch --cpu --num_processes 2` starts one process in accelerate 1.15 (multi-CPU wants mpirun), so torchrun
    r = subprocess.run([sys.executable, '-m', 'torch.distributed.run', '--nproc_per_node', '2', '--master_port', '29533',
                        str(tmp_path/'train.py'), str(tmp_path/'sc'), str(tmp_path/'out')],
                       env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    r1 = subprocess.run([sys.executable, str(tmp_path/'train.py'), str(tmp_path/'sc'), str(tmp_path/'out')],
                        env=env, capture_output=True, text=True, timeout=300)
    assert r1.returncode == 0, r1.stderr[-3000:]
    a, b, one = (load_file(tmp_path/'out'/f) for f in ('rank0-of-2.safetensors', 'rank1-of-2.safetensors', 'rank0-of-1.safetensors'))
    init = {k: v for k,v in __import__('d2i_lit.backbones', fromlist=['x']).shapes_backbone().noise_predictor.state_dict().items()}
    moved = max(float((one[k] - init[k]).abs().max()) for k in one)
    assert moved > 1e-4                                   # training did change the weights
    for k in a: assert torch.equal(a[k], b[k]), k        # both ranks identical
    # = one process with the same global batch: same data, noise and averaged gradients; only the float order of the
    # reductions differs, which Adam turns into up-to-lr moves on a few near-zero-gradient biases
    rel = sum(float((a[k] - one[k]).abs().sum()) for k in a) / sum(float((one[k] - init[k]).abs().sum()) for k in a)
    assert rel < 1e-4, rel
    for k in a: torch.testing.assert_close(a[k], one[k], atol=1e-3, rtol=0, msg=k)
