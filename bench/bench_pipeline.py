"""Our `DialogToImagePipeline` against diffusers' `StableDiffusionPipeline` on the same tiny SD components, side by side.

    python bench/bench_pipeline.py [--steps 20 --batch 4 --repeats 5 --threads 1 --scheduler dpm] [--shapes]

Both pipelines share the UNet, VAE, text encoder, tokenizer and scheduler settings; runs alternate (ours, theirs, ours, ...)
so that load from other processes hits both alike. Prints images/s of each and the ratio (target: ours >= 0.95x).
`--shapes` also times the ShapesChat model: one batch-64 training step and sampling 64 images (20 DDIM steps, CFG).
"""
import argparse, os, statistics, time
os.environ.setdefault('HF_HUB_OFFLINE', '1')
import torch
from diffusers import StableDiffusionPipeline
from d2i_lit.core import set_threads
from d2i_lit.backbones import tiny_backbone, shapes_backbone
from d2i_lit.pipeline import DialogToImagePipeline, make_scheduler

def timed(f):
    t = time.perf_counter(); f(); return time.perf_counter() - t

def bench_vs_diffusers(a):
    bb = tiny_backbone('sd')
    ours = DialogToImagePipeline(bb, a.scheduler)
    theirs = StableDiffusionPipeline(vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer, unet=bb.noise_predictor,
                                     scheduler=make_scheduler(a.scheduler, bb.noise_scheduler.config), safety_checker=None,
                                     feature_extractor=None, requires_safety_checker=False)
    theirs.set_progress_bar_config(disable=True)
    bb.noise_predictor.eval()
    prompts = [f'# look at my dog number {i} # so cute' for i in range(a.batch)]
    run_ours = lambda: ours(prompts, steps=a.steps, guidance=7.5, generator=torch.Generator().manual_seed(0), batch_size=a.batch)
    run_theirs = lambda: theirs(prompts, num_inference_steps=a.steps, guidance_scale=7.5, generator=torch.Generator().manual_seed(0)).images
    run_ours(); run_theirs()  # warm-up
    to, tt = [], []
    for _ in range(a.repeats): to.append(timed(run_ours)); tt.append(timed(run_theirs))
    io, it = a.batch / statistics.median(to), a.batch / statistics.median(tt)
    print(f'tiny SD 64x64, {a.scheduler}, {a.steps} steps, batch {a.batch}, CFG 7.5, {torch.get_num_threads()} thread(s), median of {a.repeats}:')
    print(f'  ours      {io:7.2f} images/s')
    print(f'  diffusers {it:7.2f} images/s')
    print(f'  ratio ours/diffusers = {io/it:.3f}  (target >= 0.95)')

def bench_shapes(a):
    bb = shapes_backbone(vocab=[f'w{i}' for i in range(60)])
    opt = torch.optim.AdamW(bb.noise_predictor.parameters(), lr=1e-3)
    texts = [' '.join(f'w{(i*7+j)%60}' for j in range(20)) for i in range(64)]
    x0 = torch.rand(64, 3, 16, 16) * 2 - 1
    bb.freeze_encoders()
    def step():
        with torch.no_grad(): emb = bb.encode_prompts(texts)
        t = torch.randint(0, 1000, (64,))
        xt = bb.noise_scheduler.add_noise(x0, torch.randn_like(x0), t)
        loss = torch.nn.functional.mse_loss(bb.predict(xt, t, emb), x0)
        opt.zero_grad(); loss.backward(); opt.step()
    step()
    ts = [timed(step) for _ in range(a.repeats)]
    pipe = DialogToImagePipeline(bb, 'ddim')
    samp = lambda: pipe(texts, steps=20, guidance=3.0, generator=torch.Generator().manual_seed(0), batch_size=64)
    samp()
    tsamp = [timed(samp) for _ in range(max(2, a.repeats // 2))]
    print(f'shapes 16x16 UNet (32,64,64) cross-attention only, {torch.get_num_threads()} thread(s):')
    print(f'  train step, batch 64:            {statistics.median(ts):.3f} s  (findings: 0.37 s with 2 threads)')
    print(f'  sample 64 images, 20 DDIM + CFG: {statistics.median(tsamp):.2f} s  (findings: 3.8 s)')

if __name__ == '__main__':
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('--steps', type=int, default=20); p.add_argument('--batch', type=int, default=4)
    p.add_argument('--repeats', type=int, default=5); p.add_argument('--threads', type=int, default=1)
    p.add_argument('--scheduler', default='dpm', choices=('ddim', 'dpm')); p.add_argument('--shapes', action='store_true')
    a = p.parse_args()
    set_threads(a.threads)
    bench_vs_diffusers(a)
    if a.shapes: bench_shapes(a)
