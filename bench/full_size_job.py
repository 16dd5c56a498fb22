"""One job of the real size, in its own process, measured: `python bench/full_size_job.py JOB KIND --batch B --out DIR`.

JOB is `finetune` (one optimizer step at native resolution, gradient checkpointing on, bf16 autocast), `generate` (one
image, 2 sampler steps), `roundtrip` (one I2T2I item, full-blip + full-sd) or `unified` (one step, full-blip + full-sd).
Prints one JSON line: build, step and total seconds, resident memory before the step and the step's peak (VmHWM, reset
before the step), the load average, and where the result was written. `tests/test_full_size.py` runs it and loads the
results with diffusers/transformers; the table of `nbs/05a_full_size.ipynb` is made from its lines."""
import argparse, json, os, sys, time
from pathlib import Path
import torch
from fastai.callback.core import Callback
from d2i_lit.core import asset_path, set_threads
from d2i_lit.full_size import (full_backbone, full_captioner, cache_text_encoder, full_part, memory_now, reset_peak_memory,
                               peak_memory, static_memory)

GiB = 2**30

def photos(d:Path, n:int, size=(1024, 768))->Path:
    "`n` PhotoChat records whose photos are noisy Flickr-sized JPEGs in `d/photos`; returns the records' file."
    from PIL import Image
    import numpy as np
    recs = json.loads(asset_path('photochat_test_00_first207.json').read_text())[:n]
    (d/'photos').mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for r in recs:
        a = (g.random((size[1], size[0], 3))*255).astype('uint8')
        Image.fromarray(a).save(d/'photos'/f"{r['photo_id'].rsplit('/', 1)[-1]}.jpg", quality=90)
    (d/'recs.json').write_text(json.dumps(recs))
    return d/'recs.json'

class StepMeter(Callback):
    "Time the first batch from before the frozen encoders run to after the optimizer step; memory before it and its peak."
    order = -20 # before `DiffusionBatch` (-10): the step's time includes encoding the images
    def before_batch(self):
        if hasattr(self, 't0'): return
        self.rss0 = memory_now(); reset_peak_memory(); self.t0 = time.perf_counter()
    def after_loss(self):
        if not hasattr(self, 'first_loss'): self.first_loss, self.at_loss = float(self.learn.loss), memory_now()
    def before_step(self):
        if not hasattr(self, 'peak_fb'): self.peak_fb = peak_memory()
    def after_step(self):
        if hasattr(self, 't1'): return
        self.t1 = time.perf_counter(); self.peak = peak_memory()

def _dls(d:Path, bb, batch:int):
    from d2i_lit.data import load_photochat
    from d2i_lit.finetune import dialog_dataset
    from d2i_lit.datasets import text_image_dls
    ds = dialog_dataset(load_photochat(photos(d, batch), images_dir=d/'photos'), bb)
    return ds, text_image_dls(ds, bs=batch, seed=0)

def finetune_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.finetune import finetune
    t = time.perf_counter()
    bb = full_backbone(kind, text_dtype=torch.bfloat16 if kind == 'pixart' else None)
    build = time.perf_counter() - t
    ds, dls = _dls(out, bb, batch)
    info = {}
    if kind == 'pixart': # T5-XXL (9.5 GB in bf16) encodes the texts once and leaves: the transformer trains beside cached features
        reset_peak_memory(); t = time.perf_counter()
        cache_text_encoder(bb, list(ds.texts))
        info = dict(text_cache_s=round(time.perf_counter() - t, 1), text_cache_peak_gib=round(peak_memory()/GiB, 2))
        import gc; gc.collect()
    m = StepMeter()
    ckpt = kind != 'unidiffuser' # diffusers' UniDiffuserModel has no gradient checkpointing
    learn = finetune(bb, dls, steps=1, mixed_precision='bf16', grad_checkpointing=ckpt, ema=0.995 if ema else None,
                     out=None if kind == 'pixart' else out/'run', cbs=[m], seed=0)
    res = dict(grad_checkpointing=ckpt, build_s=round(build, 1), step_s=round(m.t1 - m.t0, 1), rss_before_step_gib=round(m.rss0/GiB, 4),
               step_peak_gib=round(m.peak/GiB, 2), at_loss_gib=round(m.at_loss/GiB, 4), peak_fwd_bwd_gib=round(m.peak_fb/GiB, 4),
               loss=m.first_loss, **info)
    if kind == 'pixart': # the result with its real (seeded) T5 back in place, so that diffusers' pipeline loads it
        learn.opt = m.learn = None; del learn # the callbacks hold the Learner: drop its optimizer state by hand
        bb.noise_predictor.zero_grad(set_to_none=True); import gc; gc.collect()
        bb.text_encoder = full_part('pixart', 'text_encoder', 0, dtype=torch.bfloat16)
        bb.save_pretrained(out/'run'/'final')
    res['static_predicted_gib'] = round(sum(static_memory(bb, 'bf16', ema=ema).values())/GiB, 2)
    return res

def generate_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.pipeline import DialogToImagePipeline
    from d2i_lit.data import load_photochat
    t = time.perf_counter()
    bb = full_backbone(kind, dtype=torch.bfloat16 if kind == 'pixart' else None)
    build = time.perf_counter() - t
    pipe = DialogToImagePipeline(bb, 'dpm')
    ds = load_photochat(asset_path('photochat_test_00_first207.json'))[:batch]
    rss0 = memory_now(); reset_peak_memory(); t = time.perf_counter()
    ims = pipe(ds, steps=2, guidance=7.5, generator=[torch.Generator().manual_seed(i) for i in range(batch)], batch_size=batch)
    step = time.perf_counter() - t
    (out/'images').mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(ims): im.save(out/'images'/f'{i}.png')
    return dict(build_s=round(build, 1), step_s=round(step, 1), rss_before_step_gib=round(rss0/GiB, 2), step_peak_gib=round(peak_memory()/GiB, 2),
                image_size=list(ims[0].size))

def roundtrip_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.pipeline import DialogToImagePipeline
    from d2i_lit.roundtrip import PipelineGenerator, PixelEmbedder, roundtrip_to_dir
    t = time.perf_counter()
    cap, gen = full_captioner(), PipelineGenerator(DialogToImagePipeline(full_backbone('sd'), 'dpm'), steps=2, batch_size=2, name='full-sd')
    build = time.perf_counter() - t
    photos(out, 1)
    im = next((out/'photos').iterdir())
    items = [dict(id='0', image=im, texts=['a photo'], references=['a photo'])]
    rss0 = memory_now(); reset_peak_memory(); t = time.perf_counter()
    roundtrip_to_dir('i2t2i', cap, gen, PixelEmbedder(), items, out/'run', k=2, seed=0, progress=False)
    return dict(build_s=round(build, 1), step_s=round(time.perf_counter() - t, 1), rss_before_step_gib=round(rss0/GiB, 2),
                step_peak_gib=round(peak_memory()/GiB, 2))

def unified_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.unified import unified_finetune
    from d2i_lit.datasets import CaptionImageDataset, text_image_dls
    t = time.perf_counter()
    bb, cap = full_backbone('sd'), full_captioner()
    build = time.perf_counter() - t
    photos(out, batch)
    recs = [dict(caption=f'a photo of a dog number {i}', image=p) for i, p in enumerate(sorted((out/'photos').iterdir()))]
    dls = text_image_dls(CaptionImageDataset(recs, bb.resolution), bs=batch, seed=0)
    m = StepMeter()
    learn = unified_finetune(bb, cap, dls, steps=1, warmup=0, mixed_precision='bf16', out=out/'run', cbs=[m], seed=0)
    return dict(build_s=round(build, 1), step_s=round(m.t1 - m.t0, 1), rss_before_step_gib=round(m.rss0/GiB, 4),
                step_peak_gib=round(m.peak/GiB, 2), loss=m.first_loss)

JOBS = dict(finetune=finetune_job, generate=generate_job, roundtrip=roundtrip_job, unified=unified_job)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('job', choices=list(JOBS)); p.add_argument('kind', choices=['sd', 'pixart', 'unidiffuser'])
    p.add_argument('--batch', type=int, default=1); p.add_argument('--out', required=True)
    p.add_argument('--threads', type=int, default=2); p.add_argument('--ema', action='store_true', help='EMA on (4 more bytes per trainable parameter)')
    a = p.parse_args(argv)
    set_threads(a.threads); torch.manual_seed(0)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    load0, base, t = os.getloadavg()[0], memory_now(), time.perf_counter()
    res = JOBS[a.job](a.kind, a.batch, out, a.ema)
    rec = dict(job=a.job, kind=a.kind, batch=a.batch, ema=a.ema, threads=a.threads, malloc_mmap_threshold=os.environ.get('MALLOC_MMAP_THRESHOLD_'), **res, total_s=round(time.perf_counter() - t, 1),
               process_base_gib=round(base/GiB, 2), load_before=round(load0, 2), load_after=round(os.getloadavg()[0], 2),
               out=str(out/'run' if a.job in ('finetune', 'roundtrip', 'unified') else out/'images'))
    print(json.dumps(rec), flush=True)

if __name__ == '__main__': main()
