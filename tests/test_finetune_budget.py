"""One text per dialog: what a model is fine-tuned on for a dialog is exactly what it is conditioned on when generating for it,
through the API and through `d2i finetune` + `d2i generate` (the model records its style, budget and truncation rule), and
what `d2i linearize` prints at the same budget, on the bundled PhotoChat dialogs (127 of 207 exceed CLIP's 77 positions)."""
import json, os, subprocess, sys
from dataclasses import replace
from pathlib import Path
import pytest, torch
from PIL import Image

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1'}

def photos(folder, dialogs):
    "One small photo per dialog, named as PhotoChat's `photo_id` pairs them."
    for i,d in enumerate(dialogs):
        p = Path(folder)/f'{d.photo_id}.jpg'; p.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (12, 10), (i % 256, 3*i % 256, 7*i % 256)).save(p)
    return folder

def test_api_trains_on_the_generation_text(tmp_path):
    from d2i_lit.core import set_seed
    from d2i_lit.data import load_sample
    from d2i_lit.linearize import linearize
    from d2i_lit.backbones import tiny_backbone
    from d2i_lit.datasets import DialogImageDataset, text_image_dls
    from d2i_lit.pipeline import DialogToImagePipeline
    from d2i_lit.finetune import finetune
    from fastai.callback.core import Callback
    img = tmp_path/'x.png'; Image.new('RGB', (8, 8)).save(img)
    dialogs = [replace(d, image_path=img) for d in load_sample()]
    set_seed(0); bb = tiny_backbone('pixart')
    want = DialogToImagePipeline(bb).prompts(dialogs, 'hash')
    over = [d for d,w in zip(dialogs, want) if len(bb.tokenizer(linearize(d, 'hash')).input_ids) > 77]
    assert len(over) == 127 and all(len(bb.tokenizer(w).input_ids) <= 77 for w in want)
    class Seen(Callback):
        order = -11 # before DiffusionBatch encodes them
        def __init__(self): self.texts = []
        def before_batch(self): self.texts += list(self.learn.xb[0])
    seen = Seen()
    # a dataset built WITHOUT a budget (the tokenizer would cut its long texts at the end): finetune aligns it
    ds = DialogImageDataset(dialogs, 'hash', bb.resolution)
    finetune(bb, text_image_dls(ds, bs=69, seed=0), steps=3, p_uncond=0., ema=None, cbs=[seen])  # 3 x 69 = one epoch, every dialog once
    assert sorted(seen.texts) == sorted(want)
    assert sum(a != linearize(d, 'hash') for a,d in zip(want, dialogs)) == 127

def d2i(*args): return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', *map(str, args)], env=ENV, capture_output=True, text=True, timeout=600)

def test_cli_trains_on_the_generation_text(tmp_path):
    "A model fine-tuned in a style and budget other than the defaults is prompted by `d2i generate` (no --style) with its training texts."
    from d2i_lit.data import load_sample
    from d2i_lit.linearize import linearize
    from d2i_lit.backbones import Backbone
    dialogs = load_sample()
    photos(tmp_path/'photos', dialogs)
    sample = Path(dialogs[0].source)
    r = d2i('finetune', '--model', 'tiny-sd', '--data', sample, '--images-dir', tmp_path/'photos', '--out', tmp_path/'run', '--steps', 1,
            '--batch-size', 3, '--ema', 0, '--style', 'per', '--max-tokens', 20, '--cache', '--grad-checkpointing', '--num-workers', 1)
    assert r.returncode == 0, r.stderr[-3000:]
    trained = {str(j['id']): j['text'] for j in map(json.loads, (tmp_path/'run/texts.jsonl').read_text().splitlines())}
    assert len(trained) == 207
    cfg = json.loads((tmp_path/'run/config.json').read_text())
    assert (cfg['max_tokens'], cfg['style'], cfg['model'], cfg['cache'], cfg['grad_checkpointing'], cfg['num_workers']) == (20, 'per', 'tiny-sd', True, True, 1)
    assert cfg['data'] == str(sample.resolve()) and cfg['run']['pairs'] == 207
    bb = Backbone.from_pretrained(tmp_path/'run/final')
    assert (bb.text_format.style, bb.budget, bb.text_format.truncation) == ('per', 20, 'oldest')  # saved with the model
    assert all(len(bb.tokenizer(t, add_special_tokens=False).input_ids) <= 20 for t in trained.values())
    full = {str(d.dialogue_id): linearize(d, 'per') for d in dialogs}
    assert sum(trained[k] != full[k] for k in full) > 127  # a tighter budget than CLIP's 75: more dialogs lose old turns
    r = d2i('generate', '--model', tmp_path/'run/final', '--dialogs', sample, '--out', tmp_path/'gen', '--sample-steps', 1, '--guidance', 1,
            '--batch-size', 69, '--scheduler', 'ddim', '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert 'trained with' not in r.stderr  # its own format: nothing to say
    conditioned = {str(j['id']): j['prompt'] for j in map(json.loads, (tmp_path/'gen/manifest.jsonl').read_text().splitlines())}
    assert conditioned == trained
    run = json.loads((tmp_path/'gen/run.json').read_text())
    assert (run['style'], run['max_tokens'], run['truncation']) == ('per', 20, 'oldest')
    # `d2i linearize` at the same budget prints the same texts
    r = d2i('linearize', sample, '--style', 'per', '--max-tokens', 20)
    assert r.returncode == 0, r.stderr[-3000:]
    assert {str(j['dialogue_id']): j['text'] for j in map(json.loads, r.stdout.splitlines())} == trained
    # an explicit other style works, and says once that it differs from training
    r = d2i('generate', '--model', tmp_path/'run/final', '--dialogs', sample, '--limit', 4, '--style', 'hash', '--out', tmp_path/'gen2',
            '--sample-steps', 1, '--no-progress')
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stderr.count("trained with style 'per'; prompting it with 'hash'") == 1, r.stderr
