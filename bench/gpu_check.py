"""The GPU check's measurements (run by `bench/gpu_check.sh`): full-size Stable Diffusion 1.5 with random weights, bf16.

1. The fine-tuning step of `d2i_lit.finetune` at per-device batch 8, 16 and 32 (gradient checkpointing on, EMA off),
   side by side with diffusers' own training step as `examples/text_to_image/train_text_to_image.py` computes it:
   VAE latents times the scaling factor, `randn_like` noise, uniform timesteps, `add_noise`, CLIP text features, the
   UNet under bf16 autocast with fp32 weights, the fp32 MSE against the noise, backward, gradient clipping at 1.0,
   AdamW (lr 1e-4, weight decay 1e-2), written out here with the same model, batch and precision; seconds per step
   (median of the steps after the first) and peak allocated memory, against `full_size.predict_memory`.
2. Generation: `DialogToImagePipeline` against diffusers' `StableDiffusionPipeline` built on the same components,
   DPM-Solver++ 25 steps, guidance 7.5, batch 8, bf16: images/s.

`--smoke` runs the same logic on the CPU with the tiny tier (batches 2/4, 2 sampler steps), so that it is tested where
no GPU is. Writes `gpu_check.json` and `gpu_check.md` into `--out`."""
import argparse, json, os, statistics, sys, time
from pathlib import Path
import torch, torch.nn.functional as F

GiB = 2**30

def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def backbone(smoke:bool, dev):
    from d2i_lit.backbones import tiny_backbone
    from d2i_lit.full_size import full_backbone
    bb = tiny_backbone('sd') if smoke else full_backbone('sd', device=dev)
    return bb.to(dev)

def batch(bb, n:int, dev):
    "`n` random images in [-1,1] at the backbone's resolution and `n` short texts."
    g = torch.Generator().manual_seed(n)
    x = torch.rand(n, 3, bb.resolution, bb.resolution, generator=g)*2 - 1
    return [f'# a photo number {i} of my dog on the beach' for i in range(n)], x

def ours(bb, n:int, steps:int, dev)->dict:
    "Seconds per `finetune` step (median after the first) and the peak memory of the run."
    from fastai.callback.core import Callback
    from d2i_lit.datasets import text_image_dls
    from d2i_lit.finetune import finetune
    from d2i_lit.full_size import memory_now, peak_memory, reset_peak_memory
    texts, x = batch(bb, n, dev)
    dls = text_image_dls(list(zip(texts, x)), bs=n, seed=0, device=dev)
    class StepTimes(Callback):
        order = -20 # before the frozen encoders run: a step includes them, as diffusers' does
        def before_fit(self): self.seconds = []
        def before_batch(self): _sync(dev); self.t = time.perf_counter()
        def after_step(self): _sync(dev); self.seconds.append(time.perf_counter() - self.t)
    st = StepTimes()
    reset_peak_memory(dev); base = memory_now(dev)
    learn = finetune(bb, dls, steps=steps, mixed_precision='bf16', grad_checkpointing=True, ema=0., cbs=[st], seed=0)
    t = st.seconds
    res = dict(step_s=statistics.median(t[1:] or t), first_step_s=t[0], peak_gib=peak_memory(dev)/GiB,
               base_gib=base/GiB)
    learn.opt = st.learn = None # free AdamW's moments before the next run
    bb.noise_predictor.zero_grad(set_to_none=True)
    return res

def diffusers_step(bb, n:int, steps:int, dev)->dict:
    "The same model, batch and precision through diffusers' `train_text_to_image.py` training step, written out."
    from d2i_lit.full_size import memory_now, peak_memory, reset_peak_memory
    unet, vae, text_encoder, sched = bb.noise_predictor, bb.vae, bb.text_encoder, bb.noise_scheduler
    weight_dtype = torch.bfloat16
    vae.requires_grad_(False).to(dev, weight_dtype); text_encoder.requires_grad_(False).to(dev, weight_dtype)
    unet.train().requires_grad_(True).float(); unet.enable_gradient_checkpointing()
    opt = torch.optim.AdamW(unet.parameters(), lr=1e-4, betas=(0.9, 0.999), weight_decay=1e-2, eps=1e-8)
    texts, x = batch(bb, n, dev)
    ids = bb.tokenize(texts).to(dev)
    times = []
    reset_peak_memory(dev); base = memory_now(dev)
    for _ in range(steps):
        _sync(dev); t = time.perf_counter()
        latents = vae.encode(x.to(dev, weight_dtype)).latent_dist.sample() * vae.config.scaling_factor
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, sched.config.num_train_timesteps, (n,), device=dev).long()
        noisy = sched.add_noise(latents, noise, timesteps)
        hidden = text_encoder(ids)[0]
        with torch.autocast(dev.type, dtype=torch.bfloat16):
            pred = unet(noisy, timesteps, hidden).sample
        loss = F.mse_loss(pred.float(), noise.float(), reduction='mean')
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step(); opt.zero_grad()
        _sync(dev); times.append(time.perf_counter() - t)
    res = dict(step_s=statistics.median(times[1:] or times), first_step_s=times[0], peak_gib=peak_memory(dev)/GiB,
               base_gib=base/GiB)
    del opt; unet.disable_gradient_checkpointing(); unet.zero_grad(set_to_none=True)
    return res

def generation(bb, n:int, steps:int, dev)->dict:
    "Images/s of `DialogToImagePipeline` and `StableDiffusionPipeline` on the same components (bf16 on a GPU)."
    import diffusers
    from d2i_lit.pipeline import DialogToImagePipeline, make_scheduler
    bb.to(dev, torch.bfloat16 if dev.type == 'cuda' else torch.float32) # one dtype for every part, as a pipeline runs
    bb.noise_predictor.eval()
    texts = [f'# a photo number {i} of my dog on the beach' for i in range(n)]
    ours_pipe = DialogToImagePipeline(bb, 'dpm')
    sched = make_scheduler('dpm', bb.noise_scheduler.config)
    ref = diffusers.StableDiffusionPipeline(vae=bb.vae, text_encoder=bb.text_encoder, tokenizer=bb.tokenizer,
                                            unet=bb.noise_predictor, scheduler=sched, safety_checker=None,
                                            feature_extractor=None, requires_safety_checker=False)
    ref.set_progress_bar_config(disable=True)
    def one(f): # images/s of the second call (the first warms up)
        f(); _sync(dev); t = time.perf_counter(); f(); _sync(dev)
        return n/(time.perf_counter() - t)
    g = lambda: [torch.Generator(dev).manual_seed(i) for i in range(n)]
    res = dict(ours=one(lambda: ours_pipe(texts, style='caption', sample_steps=steps, guidance=7.5, generator=g(),
                                          batch_size=n)),
               diffusers=one(lambda: ref(texts, num_inference_steps=steps, guidance_scale=7.5, generator=g(),
                                         height=bb.resolution, width=bb.resolution)))
    res['ratio'] = res['ours']/res['diffusers']
    return res

def table(res:dict)->str:
    rows = ['| per-device batch | d2i step (s) | diffusers step (s) | ratio | d2i peak (GiB) | diffusers peak (GiB) '
            '| predicted (GiB) |', '|---|---|---|---|---|---|---|']
    for r in res['finetune']:
        o, d = r['ours'], r['diffusers']
        pred = '–' if r['predicted_gib'] is None else f"{r['predicted_gib']:.1f}"
        rows.append(f"| {r['batch']} | {o['step_s']:.3f} | {d['step_s']:.3f} | {o['step_s']/d['step_s']:.2f} | "
                    f"{o['peak_gib']:.1f} | {d['peak_gib']:.1f} | {pred} |")
    g = res['generation']
    rows += ['', f"generation ({g['batch']} images, {g['steps']} DPM steps, CFG 7.5): d2i {g['ours']:.2f} images/s, "
                 f"diffusers' StableDiffusionPipeline {g['diffusers']:.2f} images/s, ratio {g['ratio']:.3f}"]
    return '\n'.join(rows)

def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument('--smoke', action='store_true', help='tiny tier on the CPU: checks the logic only')
    ap.add_argument('--out', required=True); ap.add_argument('--steps', type=int, default=4)
    a = ap.parse_args(argv)
    from d2i_lit.core import set_threads, D2IError
    from d2i_lit.full_size import predict_memory, static_memory
    dev = torch.device('cpu' if a.smoke or not torch.cuda.is_available() else 'cuda')
    if not a.smoke and dev.type != 'cuda': sys.exit('gpu_check.py: no CUDA device (--smoke: the logic on the CPU)')
    if a.smoke: set_threads(int(os.environ.get('D2I_THREADS', 2)))
    torch.manual_seed(0)
    bb = backbone(a.smoke, dev)
    sizes, gen_n, gen_steps = ((2, 4), 2, 2) if a.smoke else ((8, 16, 32), 8, 25)
    name = torch.cuda.get_device_name(dev) if dev.type == 'cuda' else 'cpu'
    res = dict(device=name, smoke=a.smoke, torch=torch.__version__, finetune=[])
    for n in sizes:
        try: pred = predict_memory(bb, n, 'bf16', True, ema=False)/GiB
        except D2IError: pred = None # the tiny tier has no measured profile
        r = dict(batch=n, ours=ours(bb, n, a.steps, dev), diffusers=diffusers_step(bb, n, a.steps, dev),
                 predicted_gib=pred)
        res['finetune'].append(r); print(json.dumps(r), flush=True)
    res['generation'] = dict(batch=gen_n, steps=gen_steps, **generation(bb, gen_n, gen_steps, dev))
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    (out/'gpu_check.json').write_text(json.dumps(res, indent=1))
    (out/'gpu_check.md').write_text(table(res) + '\n')
    print(table(res))

if __name__ == '__main__': main()
