"""Cost of one shapes-tier training step (the experiment's pure-compute inner loop) under step-cost options, as ratios to a
baseline measured in the same process, interleaved round by round.

    python bench/bench_step_options.py [--rounds 3 --steps 5 --bs 64 --threads 2 --options base seq20 channels_last bf16 fused bs128 compile]

Options: `base` (fp32, word tokens padded to 64, AdamW's CPU default: one tensor at a time), `foreach` (AdamW foreach), `seq20` (the CLIP text side at budget 18: 20 positions),
`channels_last`, `bf16` (CPU autocast), `fused` (fused AdamW), `bs128` (twice the batch: per-sample cost), `compile` (torch.compile
of the UNet; compile time excluded, printed apart). Prints the median seconds per step, per sample, and the ratio to `base` per
sample. The step is the plain loop of `bench_finetune.py`: frozen text encoder, x0 loss, clip, optimizer step.
"""
import argparse, os, statistics, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from d2i_lit.core import set_seed, set_threads
from d2i_lit.backbones import shapes_backbone
from d2i_lit.finetune import freeze_frozen_parts, diffusion_loss

def make(option):
    "A frozen-encoder shapes backbone and an optimizer for `option`."
    if option == 'seq20':
        from d2i_lit.shapes_text import compact_clip_tokenizer, pretraining_words
        bb = shapes_backbone(max_tokens=20, tokenizer=compact_clip_tokenizer(pretraining_words(), 20))
    else: bb = shapes_backbone()
    freeze_frozen_parts(bb)
    net = bb.noise_predictor
    if option == 'channels_last': net.to(memory_format=torch.channels_last)
    params = [p for p in net.parameters() if p.requires_grad]
    kw = dict(fused=True) if option == 'fused' else dict(foreach=True) if option == 'foreach' else {}
    opt = torch.optim.AdamW(params, lr=1e-4, **kw)
    fwd = torch.compile(net) if option == 'compile' else net
    return bb, net, fwd, opt

def step(bb, net, fwd, opt, texts, x, g, option):
    sched, B = bb.noise_scheduler, len(texts)
    t = torch.randint(0, sched.config.num_train_timesteps, (B,), generator=g)
    with torch.no_grad(): emb = bb.encode_text(bb.tokenize(texts))
    x0 = x.contiguous(memory_format=torch.channels_last) if option == 'channels_last' else x
    xt = sched.add_noise(x0, torch.randn(x0.shape, generator=g), t)
    with torch.autocast('cpu', dtype=torch.bfloat16, enabled=option == 'bf16'):
        pred = fwd(xt, t, encoder_hidden_states=emb, return_dict=False)[0]
    loss = diffusion_loss(pred.float(), x0, torch.ones(B))
    loss.backward()
    torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
    opt.step(); opt.zero_grad()

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--rounds', type=int, default=3); ap.add_argument('--steps', type=int, default=5)
    ap.add_argument('--bs', type=int, default=64); ap.add_argument('--threads', type=int, default=2)
    ap.add_argument('--options', nargs='+', default=['base', 'seq20', 'channels_last', 'bf16', 'foreach', 'fused', 'bs128', 'compile'])
    a = ap.parse_args()
    set_threads(a.threads); set_seed(0)
    text = '# hi # i once saw a red square # look at my blue circle'
    runs, times = {}, {o: [] for o in a.options}
    for o in a.options:
        t0 = time.perf_counter()
        runs[o] = make(o)
        bs = 2*a.bs if o == 'bs128' else a.bs
        g = torch.Generator().manual_seed(0)
        x = torch.rand(bs, 3, 16, 16, generator=g)*2 - 1
        step(*runs[o], [text]*bs, x, g, o)  # warm-up (and compilation)
        print(f'{o}: set-up and first step {time.perf_counter() - t0:.1f} s', flush=True)
        runs[o] = (runs[o], x, g, bs)
    for r in range(a.rounds):
        for o in a.options:
            (parts, x, g, bs) = runs[o]
            t0 = time.perf_counter()
            for _ in range(a.steps): step(*parts, [text]*bs, x, g, o)
            times[o].append((time.perf_counter() - t0)/a.steps)
    # the ratio of each round is taken against the same round's base, then the median over rounds: load that changes between
    # rounds cancels, load within a round does not
    ratio = lambda o: statistics.median((t/runs[o][3])/(b/a.bs) for t, b in zip(times[o], times['base'])) if 'base' in times else float('nan')
    print(f"threads {a.threads}, batch {a.bs}, {a.rounds} rounds x {a.steps} steps (median)")
    print(f"{'option':14} {'s/step':>8} {'ms/sample':>10} {'ratio':>7}")
    for o in a.options:
        bs = runs[o][3]; m = statistics.median(times[o])
        print(f"{o:14} {m:8.3f} {1000*m/bs:10.2f} {ratio(o):7.2f}")
