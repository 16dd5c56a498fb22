"""What a user coming from diffusers' `train_text_to_image.py` does, through the command line on the tiny tier:

- `d2i finetune` with diffusers' training options (schedule, warm-up, weight decay, clipping, resolution, flip, noise
  offset, --max-train-samples), a progress bar, `--report-to tensorboard` read back with tensorboard's own reader, and
  validation images of held-out dialogs with their dialogs and prompts;
- the model card in `final/` (and `final/lora/`), read back with `huggingface_hub`, whose plain-Python prompt function
  gives what `d2i linearize` prints, and which `d2i evaluate` fills with its numbers;
- `--data` as a Hugging Face imagefolder (metadata.jsonl) and as a dataset saved with `datasets`, with bad rows and bad
  images; `d2i generate --dialogs` on the imagefolder;
- `d2i unified` with its progress bar (or none) and TensorBoard.
"""
import json, math, os, re, shutil, subprocess, sys
from pathlib import Path
import pytest
from PIL import Image

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1'}

def d2i(*args, env=None):
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', *map(str, args)], env={**ENV, **(env or {})}, capture_output=True,
                          text=True, timeout=900)

def ok(r):
    assert r.returncode == 0, r.stderr[-3000:]
    return r

def events(folder):
    "What TensorBoard reads from the event files in `folder`."
    ea = pytest.importorskip('tensorboard.backend.event_processing.event_accumulator')
    acc = ea.EventAccumulator(str(folder), size_guidance={'images': 0, 'tensors': 0, 'scalars': 0}); acc.Reload()
    return acc

def jsonl(p): return [json.loads(l) for l in Path(p).read_text().splitlines() if l.strip()]

@pytest.fixture(scope='module')
def shapes(tmp_path_factory):
    "A small ShapesChat folder (dialogs.json + images/)."
    d = tmp_path_factory.mktemp('data')/'sc'
    ok(d2i('data', 'shapeschat', '--n', 40, '--seed', 3, '--out', d))
    return d

OPTS = dict(lr_schedule='cosine', lr_warmup_steps=1, weight_decay=0.03, max_grad_norm=0.5, resolution=32, noise_offset=0.1,
            max_train_samples=24, batch_size=4, steps=4, lr=2e-4)

@pytest.fixture(scope='module')
def run(shapes, tmp_path_factory):
    "`d2i finetune` with diffusers' options, TensorBoard, validation images every 2 steps and LoRA."
    out = tmp_path_factory.mktemp('ft')/'run'
    args = [f"--{k.replace('_', '-')}={v}" for k, v in OPTS.items()]
    r = ok(d2i('finetune', '--model', 'tiny-sd', '--data', shapes, '--out', out, *args, '--random-flip', '--valid-every', 2,
               '--report-to', 'tensorboard', '--lora-rank', 2))
    return out, r

def test_training_options_recorded(run):
    out, _ = run
    cfg = json.loads((out/'config.json').read_text())
    assert {k: cfg[k] for k in OPTS} == OPTS and cfg['random_flip'] is True and cfg['report_to'] == 'tensorboard'
    assert (cfg['run']['resolution'], cfg['run']['pairs'], cfg['run']['batch_size']) == (32, 24, 4)
    from d2i_lit.backbones import Backbone
    assert Backbone.from_pretrained(out/'final').resolution == 32

def test_progress_bar(run):
    "Process 0's bar counts the run's steps with the loss, its last line complete."
    _, r = run
    lines = [l for l in r.stderr.replace('\r', '\n').splitlines() if l.startswith('steps: ')]
    assert lines and lines[-1].startswith('steps: 4/4') and 'loss' in lines[-1]
    assert r.stderr.split('steps: 4/4', 1)[1].split('\n', 1)[0].count('\n') == 0 and '\n' in r.stderr.split('steps: 4/4', 1)[1]

def test_tensorboard(run, shapes):
    "Loss, learning rate and gradient norm per step, as log.csv has them; the schedule as its formula gives it."
    out, _ = run
    acc = events(out/'logs')
    log = {int(r['step']): r for r in __import__('csv').DictReader(open(out/'log.csv'))}
    for tag, col in (('train/loss', 'loss'), ('train/lr', 'lr'), ('train/grad_norm', 'grad_norm')):
        got = {e.step: e.value for e in acc.Scalars(tag)}
        assert sorted(got) == [1, 2, 3, 4]
        assert all(math.isclose(got[s], float(log[s][col]), rel_tol=1e-4) for s in got), tag
    lr, total = OPTS['lr'], OPTS['steps'] # warm-up of one step, then cosine to 0 (diffusers' cosine schedule)
    want = [lr*0.5*(1 + math.cos(math.pi*s/total)) for s in range(total)]
    assert [e.value for e in acc.Scalars('train/lr')] == pytest.approx(want, rel=1e-5)

def test_validation_images_of_held_out_dialogs(run, shapes):
    "Validation images of the last 4 dialogs of --data, not trained on, each with its dialog and the prompt `d2i linearize` prints."
    out, _ = run
    held = json.loads((out/'config.json').read_text())['run']['held_out']
    ids = [d['dialogue_id'] for d in json.loads((shapes/'dialogs.json').read_text())]
    assert held == ids[-4:]
    assert not set(held) & {t['id'] for t in jsonl(out/'texts.jsonl')}
    acc = events(out/'logs')
    assert sorted(acc.Tags()['images']) == [f'validation/{i:02d}' for i in range(4)]
    assert [e.step for e in acc.Images('validation/00')] == [2, 4]
    prompts = {p['dialogue_id']: p['text'] for p in map(json.loads, ok(d2i('linearize', shapes/'dialogs.json', '--tokenizer', out/'final')).stdout.splitlines())}
    for i, did in enumerate(held):
        text = acc.Tensors(f'validation/{i:02d}/text_summary')[-1].tensor_proto.string_val[0].decode()
        assert f'prompt: `{prompts[did]}`' in text
    assert sorted(os.listdir(out/'samples')) == ['step-000002.png', 'step-000004.png']

def _prompt_fn(card_text):
    "The card's plain-Python `d2i_prompt`, as a user would copy it."
    src = next(b for b in re.findall(r'```python\n(.*?)```', card_text, re.S) if 'def d2i_prompt' in b)
    ns = {}; exec(src, ns); return ns['d2i_prompt']

def test_model_card(run, shapes):
    "The card in final/ (and final/lora/) reads with huggingface_hub; its prompt function gives `d2i linearize`'s prompts."
    from huggingface_hub import ModelCard
    from transformers import CLIPTokenizer
    out, _ = run
    card = ModelCard.load(out/'final'/'README.md')
    d = card.data
    assert (d.library_name, d.pipeline_tag, d.base_model) == ('diffusers', 'text-to-image', None)
    assert {'d2i_lit', 'dialog-to-image', 'linearization-hash'} <= set(d.tags)
    for k, v in {**OPTS, 'random_flip': True}.items(): assert k == 'batch_size' or f'| `{k}` | {v} |' in card.text, k
    assert '| `batch_size` | 4: the global batch, 4 per device on 1 process(es) |' in card.text
    cmd = re.search(r'```sh\n(d2i finetune .*)\n```', card.text)[1]
    from d2i_lit.options import finetune_cli
    s = finetune_cli.parse(cmd.split()[2:])
    assert {k: getattr(s, k) for k in OPTS} == OPTS and s.lora_rank == 2
    tok = CLIPTokenizer.from_pretrained(out/'final'/'tokenizer') # the tokenizer a diffusers pipeline loads from the folder
    fn = _prompt_fn(card.text)
    dialogs = json.loads((shapes/'dialogs.json').read_text())
    want = [json.loads(l)['text'] for l in ok(d2i('linearize', shapes/'dialogs.json', '--tokenizer', out/'final', '--max-tokens', 75)).stdout.splitlines()]
    turns = lambda rec: [(m['user_id'], m['message']) for m in rec['dialogue'][:next(i for i, m in enumerate(rec['dialogue']) if m['share_photo'])]]
    assert [fn(turns(rec), tok) for rec in dialogs] == want
    example = re.search(r'The prompt \((\d+) of (\d+) tokens\):\n\n```text\n(.*)\n```', card.text)
    assert int(example[2]) == 75 and int(example[1]) == len(tok(example[3], add_special_tokens=False).input_ids)
    assert "upload_folder(repo_id='you/your-model', folder_path='run/final')" in card.text
    lora = ModelCard.load(out/'final'/'lora'/'README.md')
    assert 'lora' in lora.data.tags and "pipe.load_lora_weights('run/final/lora')" in lora.text

def test_evaluate_fills_the_card(run, shapes, tmp_path):
    "`d2i evaluate` on images generated from the model adds its numbers to the model's card."
    from huggingface_hub import ModelCard
    out, _ = run
    ok(d2i('generate', '--model', out/'final', '--dialogs', shapes, '--out', tmp_path/'gen', '--limit', 8, '--sample-steps', 2, '--no-progress'))
    r = ok(d2i('evaluate', '--generated', tmp_path/'gen', '--real', shapes, '--metrics', 'attr', '--no-progress'))
    assert f"metrics added to the model card {out/'final'/'README.md'}" in r.stderr
    res = json.loads((tmp_path/'gen'/'metrics.json').read_text())
    card = ModelCard.load(out/'final'/'README.md')
    got = {e.metric_type: e.metric_value for e in card.data.eval_results if e.metric_config == 'gen'}
    assert got['attr_acc'] == pytest.approx(res['attr']['attr_acc']) and got['coherence'] == pytest.approx(res['attr']['coherence'])
    assert '| gen | sc | attr_acc (N=8) |' in card.text

def _imagefolder(shapes, root):
    "The ShapesChat dialogs as an imagefolder: images beside metadata.jsonl, dialogs in PhotoChat's turns; a caption row,"
    "a row whose image is missing and one whose image is not an image."
    root.mkdir(parents=True)
    rows = []
    for rec in json.loads((shapes/'dialogs.json').read_text())[:12]:
        name = f"img/{rec['dialogue_id']}.png"; (root/'img').mkdir(exist_ok=True)
        shutil.copy(shapes/'images'/Path(rec['photo_url']).name, root/name)
        rows.append(dict(file_name=name, dialogue=[dict(message=m['message'], user_id=m['user_id']) for m in rec['dialogue'] if not m['share_photo']][:4],
                         dialogue_id=str(rec['dialogue_id']))) # one type per column, as `datasets` requires
    rows.append(dict(file_name=rows[0]['file_name'], text='a picture of a red circle', dialogue_id='caption'))
    rows.append(dict(file_name='img/gone.png', text='missing', dialogue_id='gone'))
    (root/'img'/'broken.png').write_bytes(b'not a png'); rows.append(dict(file_name='img/broken.png', text='broken', dialogue_id='broken'))
    (root/'metadata.jsonl').write_text(''.join(json.dumps(r) + '\n' for r in rows))
    return root

def test_imagefolder_and_saved_dataset(shapes, tmp_path):
    "Both layouts fine-tune to the same texts; bad images are skipped and reported; `d2i generate` reads the imagefolder."
    datasets = pytest.importorskip('datasets')
    folder = _imagefolder(shapes, tmp_path/'imgfolder')
    r = ok(d2i('finetune', '--model', 'tiny-sd', '--data', folder, '--out', tmp_path/'a', '--steps', 1, '--batch-size', 4, '--no-progress'))
    assert '2 skipped' in r.stderr and 'steps:' not in r.stderr
    skipped = json.loads((tmp_path/'a'/'skipped_images.json').read_text())
    assert [(s['item'].split('metadata.jsonl: ')[1], s['image'] and Path(s['image']).name) for s in skipped['skipped']] == [
        ("record 13 (dialogue_id 'gone')", None), ("record 14 (dialogue_id 'broken')", 'broken.png')], skipped
    texts = {t['id']: t['text'] for t in jsonl(tmp_path/'a'/'texts.jsonl')}
    assert len(texts) == 13 and texts['caption'] == '# a picture of a red circle'
    # the same rows as a saved dataset, its columns named as a user named them
    hf = datasets.load_dataset('imagefolder', data_dir=str(folder), split='train', cache_dir=str(tmp_path/'hf'))
    hf = hf.select([i for i, d in enumerate(hf['dialogue_id']) if d != 'gone']) # `datasets` cannot save a row whose file is missing
    hf.rename_columns({'image': 'photo', 'dialogue': 'turns'}).save_to_disk(str(tmp_path/'saved'))
    ok(d2i('finetune', '--model', 'tiny-sd', '--data', tmp_path/'saved', '--image-column', 'photo', '--dialogue-column', 'turns',
           '--out', tmp_path/'b', '--steps', 1, '--batch-size', 4, '--no-progress', '--max-train-samples', 5, env={'D2I_CACHE': str(tmp_path/'cache')}))
    assert [t['text'] for t in jsonl(tmp_path/'b'/'texts.jsonl')] == list(texts.values())[:5]
    r = d2i('finetune', '--model', 'tiny-sd', '--data', tmp_path/'saved', '--out', tmp_path/'c', '--steps', 1)
    assert r.returncode == 2 and "no image column 'image'" in r.stderr and '--image-column' in r.stderr
    # generation reads the imagefolder too, prompting each dialog as it was trained
    ok(d2i('generate', '--model', tmp_path/'a'/'final', '--dialogs', folder, '--out', tmp_path/'gen', '--limit', 4, '--sample-steps', 1, '--no-progress'))
    assert {m['id']: m['prompt'] for m in jsonl(tmp_path/'gen'/'manifest.jsonl')} == {k: texts[k] for k in list(texts)[:4]}

def test_bad_row_is_one_line(tmp_path):
    "A bad row of metadata.jsonl stops the run before training, in one line naming the file, the row and the column."
    (tmp_path/'f').mkdir(); Image.new('RGB', (8, 8)).save(tmp_path/'f'/'a.png')
    (tmp_path/'f'/'metadata.jsonl').write_text(json.dumps(dict(file_name='a.png', text='ok')) + '\n'
                                               + json.dumps(dict(file_name='a.png', dialogue=[dict(message='hi', user_id=7)])) + '\n')
    r = d2i('finetune', '--model', 'tiny-sd', '--data', tmp_path/'f', '--out', tmp_path/'o', '--steps', 1)
    errors = [l for l in r.stderr.splitlines() if 'error' in l]
    assert r.returncode == 2 and errors == [f"d2i finetune: error: {tmp_path/'f'/'metadata.jsonl'}: line 2: column 'dialogue[0].user_id': "
                                            "user_id must be 0 or 1, got 7"], r.stderr
    assert not (tmp_path/'o'/'log.csv').exists() and not (tmp_path/'o'/'final').exists()

def test_unified_progress_and_tensorboard(shapes, tmp_path):
    "`d2i unified`: the bar (none with --no-progress), TensorBoard, and a card for its generator."
    from huggingface_hub import ModelCard
    base = ['unified', '--captioner', 'tiny', '--generator', 'tiny-sd', '--data', shapes, '--steps', 2, '--batch-size', 4, '--limit', 8]
    r = ok(d2i(*base, '--out', tmp_path/'u', '--report-to', 'tensorboard'))
    assert 'steps: 2/2' in r.stderr
    assert [e.step for e in events(tmp_path/'u'/'logs').Scalars('train/loss')] == [1, 2]
    assert ModelCard.load(tmp_path/'u'/'final'/'README.md').data.pipeline_tag == 'text-to-image'
    r = ok(d2i(*base, '--out', tmp_path/'v', '--no-progress'))
    assert 'steps:' not in r.stderr
