"""One job of the real size, in its own process, measured: `python bench/full_size_job.py JOB KIND --batch B --out DIR`.

JOB is `finetune` (one optimizer step at native resolution, bf16 autocast, gradient checkpointing where the model has
it), `generate` (one image per batch item, 2 sampler steps), `roundtrip` (one I2T2I item, full-blip + full-sd) or
`unified` (one step, full-blip + full-sd). Prints one JSON line: build and step seconds, resident memory before the
step, at the end of its forward pass, at the peak of forward and backward and at its peak (`VmHWM`, reset before the
step), the load average, and where the result was written. `tests/test_full_size.py` runs it and loads the results with
diffusers/transformers; the table of `nbs/05a_full_size.ipynb` is made from its lines (with MALLOC_MMAP_THRESHOLD_=65536,
so that resident memory follows live tensors)."""
import argparse, gc, json, os, time
from pathlib import Path
import numpy as np
import torch
from PIL import Image
from d2i_lit.core import asset_path, set_threads
from d2i_lit.full_size import (GiB, StepMeter, cache_text_encoder, full_backbone, full_captioner, full_part, memory_now,
                               peak_memory, reset_peak_memory, static_memory)

def gib(v:float, nd:int=4)->float: return round(v/GiB, nd)

def photos(d:Path, n:int, size=(1024, 768))->Path:
    "`n` PhotoChat records whose photos are noisy Flickr-sized JPEGs in `d/photos`; returns the records' file."
    recs = json.loads(asset_path('photochat_test_00_first207.json').read_text())[:n]
    (d/'photos').mkdir(parents=True, exist_ok=True)
    g = np.random.default_rng(0)
    for r in recs:
        a = (g.random((size[1], size[0], 3))*255).astype('uint8')
        Image.fromarray(a).save(d/'photos'/f"{r['photo_id'].rsplit('/', 1)[-1]}.jpg", quality=90)
    (d/'recs.json').write_text(json.dumps(recs))
    return d/'recs.json'

def _dls(d:Path, bb, batch:int):
    "The dialog dataset of `batch` records for `bb`, as `d2i finetune` builds it, and its loaders."
    from d2i_lit.data import load_photochat
    from d2i_lit.finetune import dialog_dataset
    from d2i_lit.datasets import text_image_dls
    ds = dialog_dataset(load_photochat(photos(d, batch), images_dir=d/'photos'), bb)
    return ds, text_image_dls(ds, bs=batch, seed=0)

def _meter(m:StepMeter)->dict:
    return dict(step_s=round(m.seconds, 1), rss_before_step_gib=gib(m.before), at_loss_gib=gib(m.at_loss),
                peak_fwd_bwd_gib=gib(m.peak_fwd_bwd), step_peak_gib=gib(m.peak, 2), loss=m.first_loss)

def _cache_t5(bb, texts)->dict:
    "T5-XXL (9.5 GB in bf16) encodes the texts once and leaves: the transformer trains beside cached features."
    reset_peak_memory(); t = time.perf_counter()
    cache_text_encoder(bb, texts); gc.collect()
    return dict(text_cache_s=round(time.perf_counter() - t, 1), text_cache_peak_gib=gib(peak_memory(), 2))

def _save_pixart(learn, m:StepMeter, bb, path:Path):
    "Save the PixArt-α result with its (seeded) T5 built again, after dropping the optimizer state the callbacks hold."
    learn.opt = m.learn = None
    bb.noise_predictor.zero_grad(set_to_none=True); gc.collect()
    bb.text_encoder = full_part('pixart', 'text_encoder', 0, dtype=torch.bfloat16)
    bb.save_pretrained(path)

def finetune_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.finetune import finetune
    t = time.perf_counter()
    bb = full_backbone(kind, text_dtype=torch.bfloat16 if kind == 'pixart' else None)
    build = time.perf_counter() - t
    ds, dls = _dls(out, bb, batch)
    info = _cache_t5(bb, list(ds.texts)) if kind == 'pixart' else {}
    m, ckpt = StepMeter(), kind != 'unidiffuser' # diffusers' UniDiffuserModel has no gradient checkpointing
    learn = finetune(bb, dls, steps=1, mixed_precision='bf16', grad_checkpointing=ckpt, ema=0.995 if ema else 0.,
                     out=None if kind == 'pixart' else out/'run', cbs=[m], seed=0)
    res = dict(grad_checkpointing=ckpt, build_s=round(build, 1), **_meter(m), **info)
    if kind == 'pixart': _save_pixart(learn, m, bb, out/'run'/'final')
    res['static_predicted_gib'] = gib(sum(static_memory(bb, 'bf16', ema=ema).values()), 2)
    return res

def generate_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.pipeline import DialogToImagePipeline
    from d2i_lit.data import load_photochat
    t = time.perf_counter()
    bb = full_backbone(kind, dtype=torch.bfloat16 if kind == 'pixart' else None) # T5-XXL is 19 GB in float32
    build = time.perf_counter() - t
    pipe, ds = DialogToImagePipeline(bb, 'dpm'), load_photochat(asset_path('photochat_test_00_first207.json'))[:batch]
    rss0 = memory_now(); reset_peak_memory(); t = time.perf_counter()
    gens = [torch.Generator().manual_seed(i) for i in range(batch)]
    ims = pipe(ds, sample_steps=2, guidance=7.5, generator=gens, batch_size=batch)
    step = time.perf_counter() - t
    (out/'images').mkdir(parents=True, exist_ok=True)
    for i, im in enumerate(ims): im.save(out/'images'/f'{i}.png')
    return dict(build_s=round(build, 1), step_s=round(step, 1), rss_before_step_gib=gib(rss0),
                step_peak_gib=gib(peak_memory(), 2), image_size=list(ims[0].size))

def roundtrip_job(kind:str, batch:int, out:Path, ema:bool)->dict:
    from d2i_lit.pipeline import DialogToImagePipeline
    from d2i_lit.roundtrip import PipelineGenerator, PixelEmbedder, RoundTripModels, roundtrip_to_dir
    t = time.perf_counter()
    cap = full_captioner()
    gen = PipelineGenerator(DialogToImagePipeline(full_backbone('sd'), 'dpm'), sample_steps=2, batch_size=2, name='full-sd')
    build = time.perf_counter() - t
    photos(out, 1)
    items = [dict(id='0', image=next((out/'photos').iterdir()), texts=['a photo'], references=['a photo'])]
    rss0 = memory_now(); reset_peak_memory(); t = time.perf_counter()
    roundtrip_to_dir(RoundTripModels(cap, gen, PixelEmbedder()), items, out/'run', direction='i2t2i', k=2, seed=0, progress=False)
    return dict(build_s=round(build, 1), step_s=round(time.perf_counter() - t, 1), rss_before_step_gib=gib(rss0),
                step_peak_gib=gib(peak_memory(), 2))

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
    unified_finetune(bb, cap, dls, steps=1, warmup=0, mixed_precision='bf16', out=out/'run', cbs=[m], seed=0)
    return dict(build_s=round(build, 1), **_meter(m))

JOBS = dict(finetune=finetune_job, generate=generate_job, roundtrip=roundtrip_job, unified=unified_job)

def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument('job', choices=list(JOBS)); p.add_argument('kind', choices=['sd', 'pixart', 'unidiffuser'])
    p.add_argument('--batch', type=int, default=1); p.add_argument('--out', required=True)
    p.add_argument('--threads', type=int, default=2)
    p.add_argument('--ema', action='store_true', help='EMA on (4 more bytes per trained parameter)')
    a = p.parse_args(argv)
    set_threads(a.threads); torch.manual_seed(0)
    out = Path(a.out); out.mkdir(parents=True, exist_ok=True)
    load0, base, t = os.getloadavg()[0], memory_now(), time.perf_counter()
    res = JOBS[a.job](a.kind, a.batch, out, a.ema)
    rec = dict(job=a.job, kind=a.kind, batch=a.batch, ema=a.ema, threads=a.threads,
               malloc_mmap_threshold=os.environ.get('MALLOC_MMAP_THRESHOLD_'), **res, total_s=round(time.perf_counter() - t, 1),
               process_base_gib=gib(base, 2), load_before=round(load0, 2), load_after=round(os.getloadavg()[0], 2),
               out=str(out/('images' if a.job == 'generate' else 'run')))
    print(json.dumps(rec), flush=True)

if __name__ == '__main__': main()
