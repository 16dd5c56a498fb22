"""The real sizes: every shipped configuration builds on the meta device with its published parameter count (quick), and
(marked `slow`, skipped unless asked for) one step of every job at full size in its own process, measured, with what it
writes loaded by diffusers/transformers. Each slow test is one command, e.g.
`D2I_SLOW=1 pytest -q tests/test_full_size.py -k "finetune and sd"` (or `-m slow`); each needs up to 20 GiB of
memory, minutes of CPU and disk for what it saves (4 GB for SD 1.5, 12 GB for PixArt-α with T5-XXL in bf16). `D2I_FULL_SIZE_LOG=FILE` appends each run's measurement (one JSON line) to FILE."""
import json, os, subprocess, sys
from pathlib import Path
import pytest, torch
from PIL import Image
from d2i_lit.backbones import tiny_backbone
from d2i_lit.core import D2IError
from d2i_lit.full_size import (FULL_NAMES, FULL_PARTS, PUBLISHED_PARAMS, GiB, full_backbone, full_config, largest_batch,
                               memory_line, param_counts, predict_memory, static_memory, t5_standin_tokenizer,
                               bert_standin_tokenizer)

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'PYTHONPATH': str(ROOT)}

@pytest.mark.parametrize('key', list(PUBLISHED_PARAMS), ids=lambda k: '-'.join(k))
def test_meta_counts_match_published(key):
    n, pub, tol, src = param_counts()[key]
    assert abs(n - pub) <= tol * pub, f'{key}: {n:,} built, {pub:,} published ({src})'

def test_full_backbones_on_meta():
    for name, kind in FULL_NAMES.items():
        bb = full_backbone(kind, device='meta')
        assert (bb.kind, bb.resolution, bb.device.type) == (kind, 512, 'meta')
        assert bb.positions == (120 if kind == 'pixart' else 77)
        assert set(bb.modules) == set(FULL_PARTS[kind]), name
        # the tokenizer's ids fit the text encoder's embedding table
        assert len(bb.tokenizer) <= bb.text_encoder.get_input_embeddings().num_embeddings
    with pytest.raises(D2IError, match='unknown full-size backbone kind'): full_backbone('sdxl', device='meta')

def test_standin_tokenizers_have_the_real_shapes():
    t5, bert = t5_standin_tokenizer(), bert_standin_tokenizer()
    assert (len(t5), t5.model_max_length, t5('a dog').input_ids[-1]) == (32100, 120, 1)
    cfg = full_config('blip', 'config.json')['text_config']
    assert (len(bert), bert.bos_token_id, bert.sep_token_id, bert.pad_token_id) == \
        (cfg['vocab_size'], cfg['bos_token_id'], cfg['sep_token_id'], cfg['pad_token_id'])

def test_memory_model_is_consistent():
    bb = full_backbone('sd', device='meta')
    st = static_memory(bb, 'bf16', ema=True)
    assert st['noise_predictor'] == st['grads'] == st['ema'] == 4*859_520_964 and st['adamw'] == 8*859_520_964
    p1, p8 = predict_memory(bb, 1), predict_memory(bb, 8)
    assert sum(st.values()) < p1 < p8  # activations grow with the batch
    assert predict_memory(bb, 8, ema=False) == p8 - st['ema']
    n = largest_batch(bb, 80*GiB)
    assert predict_memory(bb, n) <= 78*GiB < predict_memory(bb, n + 1)  # the default reserve is 2 GiB
    assert largest_batch(bb, 8*GiB) == 0  # 8 GiB cannot hold SD 1.5's weights, grads and AdamW moments
    assert 'warning' in memory_line(bb, n + 1, 80*GiB) and f'is {n}' in memory_line(bb, n + 1, 80*GiB)
    assert 'warning' not in memory_line(bb, n, 80*GiB)
    assert 'unknown' in memory_line(tiny_backbone('sd'), 4, 80*GiB)  # no measured profile: said, not guessed

def test_gpu_check_smoke(tmp_path):
    "bench/gpu_check.sh --smoke: the GPU check's logic on the CPU with the tiny tier (its figures mean nothing here)."
    env = {**ENV, 'D2I_THREADS': '1'}
    cmd = ['bash', str(ROOT/'bench'/'gpu_check.sh'), '--smoke', str(tmp_path)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    res = json.loads((tmp_path/'gpu_check.json').read_text())
    assert [f['batch'] for f in res['finetune']] == [2, 4] and res['smoke'] and res['device'] == 'cpu'
    for f in res['finetune']: assert f['ours']['step_s'] > 0 and f['diffusers']['step_s'] > 0
    assert res['generation']['ours'] > 0 and res['generation']['diffusers'] > 0
    assert res['cuda_cells']['skipped'] == (not torch.cuda.is_available())
    assert '| 4 |' in (tmp_path/'gpu_check.md').read_text()

# ---- slow: one step of every job at full size

def _slow(request):
    if os.environ.get('D2I_SLOW') != '1' and 'slow' not in (request.config.option.markexpr or ''):
        pytest.skip('full-size run: minutes and up to 20 GiB; run with D2I_SLOW=1 or -m slow')

def run_job(job, kind, out, batch=1):
    "Run `bench/full_size_job.py` in its own process (its own peak memory); its JSON record."
    cmd = [sys.executable, str(ROOT/'bench'/'full_size_job.py'), job, kind, '--batch', str(batch), '--out', str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=ENV, timeout=3600)
    assert r.returncode == 0, r.stderr[-4000:]
    rec = json.loads(r.stdout.strip().splitlines()[-1])
    if os.environ.get('D2I_FULL_SIZE_LOG'):
        with open(os.environ['D2I_FULL_SIZE_LOG'], 'a') as f: f.write(json.dumps(rec) + '\n')
    return rec

def _count(m): return sum(p.numel() for p in m.parameters())

MODEL_COUNTS = dict(sd=859_520_964, pixart=610_856_096, unidiffuser=952_535_632) # the meta builds' noise predictors

@pytest.mark.slow
@pytest.mark.parametrize('kind', ['sd', 'pixart', 'unidiffuser'])
def test_finetune_step_full_size(kind, tmp_path, request):
    _slow(request)
    import diffusers
    rec = run_job('finetune', kind, tmp_path)
    assert rec['loss'] > 0 and rec['step_peak_gib'] > rec['rss_before_step_gib']
    pipe_cls = dict(sd=diffusers.StableDiffusionPipeline, pixart=diffusers.PixArtAlphaPipeline,
                    unidiffuser=diffusers.UniDiffuserPipeline)[kind]
    pipe = pipe_cls.from_pretrained(tmp_path/'run'/'final', dtype=torch.bfloat16 if kind == 'pixart' else None)
    pred = pipe.transformer if kind == 'pixart' else pipe.unet
    assert _count(pred) == MODEL_COUNTS[kind]
    assert pipe.vae.config.block_out_channels == [128, 256, 512, 512]


@pytest.mark.slow
@pytest.mark.parametrize('kind', ['sd', 'pixart', 'unidiffuser'])
def test_generate_full_size(kind, tmp_path, request):
    _slow(request)
    rec = run_job('generate', kind, tmp_path)
    im = Image.open(tmp_path/'images'/'0.png')
    assert im.size == (512, 512) and rec['image_size'] == [512, 512]
    assert len(set(im.convert('L').getdata())) > 1  # not a constant (NaN) image

@pytest.mark.slow
def test_roundtrip_item_full_size(tmp_path, request):
    _slow(request)
    run_job('roundtrip', 'sd', tmp_path)
    recs = [json.loads(l) for l in (tmp_path/'run'/'candidates.jsonl').read_text().splitlines()]
    assert len(recs) == 2 and all(isinstance(r['caption'], str) for r in recs)
    for r in recs: assert Image.open(tmp_path/'run'/r['file']).size == (512, 512)

@pytest.mark.slow
def test_unified_step_full_size(tmp_path, request):
    _slow(request)
    import diffusers, transformers
    rec = run_job('unified', 'sd', tmp_path)
    assert rec['loss'] > 0
    pipe = diffusers.StableDiffusionPipeline.from_pretrained(tmp_path/'run'/'final')
    assert _count(pipe.unet) == 859_520_964
    cap = transformers.BlipForConditionalGeneration.from_pretrained(tmp_path/'run'/'final'/'captioner')
    assert cap.config.vision_config.image_size == 384
