"""Step time of the fastai fine-tuning loop (d2i_lit.finetune) against a plain PyTorch loop on the same tiny model and batch.

    python bench/bench_finetune.py [--rounds 5 --steps 10 --bs 16 --threads 1]

Both loops run in one process, alternating, threads pinned; same backbone kind (shapes tier), batch, optimizer (AdamW)
and per-step work (text encoding, noise, forward, loss, backward, clipping, step). Two ratios: per step in the steady state
(the time between consecutive optimizer steps, first step of each fit left out: the Learner's per-batch overhead, which
the target <= 1.05 is about), and per fit (Learner construction, optimizer creation and the first step included: fixed
costs that a 10-step bench fit magnifies and a 160-step fine-tune does not). Also prints peak resident memory.
"""
import argparse, os, resource, statistics, time, tracemalloc
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch, torch.nn.functional as F
from fastai.callback.core import Callback
from d2i_lit.core import set_seed, set_threads
from d2i_lit.backbones import shapes_backbone
from d2i_lit.finetune import finetune, freeze_frozen_parts, diffusion_loss
from d2i_lit.learner import fused_adamw

def batches(bb, n, bs):
    g = torch.Generator().manual_seed(0)
    return [(['# a red circle'] * bs, torch.rand(bs, 3, bb.resolution, bb.resolution, generator=g)*2 - 1) for _ in range(n)]

def plain(bb, data, steps, lr=1e-4):
    "The reference loop: what the fastai loop does per step, with nothing around it."
    net, sched = bb.noise_predictor, bb.noise_scheduler
    opt = fused_adamw([p for p in net.parameters() if p.requires_grad], lr=lr) # the optimizer `finetune` uses
    g = torch.Generator().manual_seed(0)
    t0 = time.perf_counter(); stamps = []
    for i in range(steps):
        texts, x = data[i % len(data)]
        B = len(texts)
        drop = (torch.rand(B, generator=g) < 0.1).tolist()
        t = torch.randint(0, sched.config.num_train_timesteps, (B,), generator=g)
        with torch.no_grad():
            x0 = bb.encode_images(x); emb = bb.encode_text(bb.tokenize(['' if d else s for s,d in zip(texts, drop)]))
        noise = torch.randn(x0.shape, generator=g)
        loss = diffusion_loss(bb.predict(sched.add_noise(x0, noise, t), t, emb), x0, torch.ones(B))
        loss.backward()
        torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
        opt.step(); opt.zero_grad()
        stamps.append(time.perf_counter())
    return (time.perf_counter() - t0)/steps, (stamps[-1] - stamps[0])/(len(stamps) - 1)

def fastai_loop(bb, data, steps, lr=1e-4):
    from fastai.data.core import DataLoaders
    from fastai.data.load import DataLoader
    from d2i_lit.datasets import collate_text_image
    items = [(s, x[i]) for texts, x in data for i,s in enumerate(texts)]
    bs = len(data[0][0])
    dl = DataLoader(items, bs=bs, shuffle=False, create_batch=collate_text_image)
    stamps = []
    class Stamp(Callback):
        order = 85 # after the other callbacks' `after_step`, before `StopAfter` (90) ends the fit
        def after_step(self): stamps.append(time.perf_counter())
    t0 = time.perf_counter()
    finetune(bb, DataLoaders(dl, DataLoader([], bs=bs, create_batch=collate_text_image)), steps=steps, lr=lr, ema=None, cbs=[Stamp()])
    return (time.perf_counter() - t0)/steps, (stamps[-1] - stamps[0])/(len(stamps) - 1)

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=5); ap.add_argument('--steps', type=int, default=10)
    ap.add_argument('--bs', type=int, default=16); ap.add_argument('--threads', type=int, default=1)
    a = ap.parse_args()
    set_threads(a.threads); set_seed(0)
    bb = shapes_backbone(); freeze_frozen_parts(bb)
    data = batches(bb, a.steps, a.bs)
    plain(bb, data, 2); fastai_loop(bb, data, 2)  # warm-up both
    tp, tf = [], [] # (per fit, steady per step) of each round
    for r in range(a.rounds):  # alternate, so machine load hits both alike
        tp.append(plain(bb, data, a.steps)); tf.append(fastai_loop(bb, data, a.steps))
    # memory in a separate, untimed round: tracemalloc slows every Python allocation, the Learner's more than the plain loop's
    tracemalloc.start(); plain(bb, data, a.steps); fastai_loop(bb, data, a.steps)
    peak_py = tracemalloc.get_traced_memory()[1]; tracemalloc.stop()
    med = lambda xs, k: statistics.median(x[k] for x in xs)
    print(f'shapes tier, batch {a.bs}, {a.threads} thread(s), {a.rounds} rounds x {a.steps} steps (median)')
    print(f'plain PyTorch loop: {med(tp, 1)*1e3:.1f} ms/step steady, {med(tp, 0)*1e3:.1f} ms/step per fit')
    print(f'fastai loop:        {med(tf, 1)*1e3:.1f} ms/step steady, {med(tf, 0)*1e3:.1f} ms/step per fit (Learner construction included)')
    print(f'ratio fastai/plain: {med(tf, 1)/med(tp, 1):.3f} steady (target <= 1.05), {med(tf, 0)/med(tp, 0):.3f} per fit')
    print(f'peak memory: RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss/1024:.0f} MiB; python heap (tracemalloc) {peak_py/2**20:.1f} MiB')
