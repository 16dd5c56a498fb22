"""The truncation rule as a factor of every command: `--truncation end` (keep the first tokens, as CLIP's tokenizer with
`truncation=True` does in diffusers' pipelines and UniDiffuser's encoder) against `oldest` (d2i_lit's default: drop the
oldest turns) through `d2i linearize`, `d2i finetune`, `d2i generate` and `d2i evaluate`, on the bundled PhotoChat dialogs
with the tiny tier. The model folder and config.json record the rule; `d2i generate` without `--truncation` uses the model's."""
import json, os, subprocess, sys
from pathlib import Path
import pytest
from PIL import Image

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1'}
BUDGET, STYLE, N = 20, 'per', 12 # a budget most dialogs exceed in the costliest style; images generated and evaluated

def d2i(*args, timeout=600):
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', *map(str, args)], env=ENV, capture_output=True, text=True,
                          timeout=timeout)

def lines(text:str)->list[dict]: return [json.loads(l) for l in text.splitlines() if l.strip()]

@pytest.fixture(scope='module')
def sample():
    from d2i_lit.data import load_sample
    return load_sample()

@pytest.fixture(scope='module')
def linearized(sample):
    "`d2i linearize` of the sample under each rule: dialogue id -> text."
    out = {}
    for rule in ('oldest', 'end'):
        r = d2i('linearize', Path(sample[0].source), '--style', STYLE, '--max-tokens', BUDGET, '--truncation', rule)
        assert r.returncode == 0, r.stderr[-2000:]
        out[rule] = {str(j['dialogue_id']): j['text'] for j in lines(r.stdout)}
    return out

def test_linearize_rules(sample, linearized):
    "Both rules fit the budget; `end` keeps a prefix of the whole text, `oldest` a suffix; they differ exactly where it binds."
    from d2i_lit.linearize import linearize, get_tokenizer
    tok, full = get_tokenizer(None), {str(d.dialogue_id): linearize(d, STYLE) for d in sample}
    n = lambda t: len(tok(t, add_special_tokens=False).input_ids)
    cut = {k for k, t in full.items() if n(t) > BUDGET}
    assert len(cut) > len(full) // 2
    for rule, texts in linearized.items():
        assert set(texts) == set(full) and all(n(t) <= BUDGET for t in texts.values()), rule
        assert all(texts[k] == full[k] for k in set(full) - cut), rule # within the budget nothing is cut
    assert all(full[k].startswith(linearized['end'][k]) for k in cut)
    # `oldest` keeps the newest words; a newest turn cut from the left keeps its speaker's marker in front
    unmarked = lambda t: t.split(' ', 1)[1] if t.split(' ', 1)[0] in ('[PER1]', '[PER2]') else t
    assert all(full[k].endswith(linearized['oldest'][k]) or full[k].endswith(unmarked(linearized['oldest'][k])) for k in cut)
    assert sum(linearized['end'][k] != linearized['oldest'][k] for k in cut) == len(cut)

def photos(folder:Path, dialogs)->Path:
    "One small photo per dialog, named as PhotoChat's `photo_id` pairs them."
    for i, d in enumerate(dialogs):
        p = folder/f'{d.photo_id}.jpg'; p.parent.mkdir(parents=True, exist_ok=True)
        Image.new('RGB', (12, 10), (i % 256, 3*i % 256, 7*i % 256)).save(p)
    return folder

@pytest.fixture(scope='module')
def trained(tmp_path_factory, sample):
    "A tiny-sd fine-tuned one step with `--truncation end`: its run folder."
    root = tmp_path_factory.mktemp('trunc')
    photos(root/'photos', sample)
    r = d2i('finetune', '--model', 'tiny-sd', '--data', Path(sample[0].source), '--images-dir', root/'photos', '--out',
            root/'run', '--steps', 1, '--batch-size', 3, '--ema', 0, '--style', STYLE, '--max-tokens', BUDGET,
            '--truncation', 'end', '--cache', '--num-workers', 1)
    assert r.returncode == 0, r.stderr[-3000:]
    return root

def test_finetune_records_the_rule(trained, linearized):
    "config.json and the saved model record `end`; the model was trained on `d2i linearize --truncation end`'s texts."
    from d2i_lit.backbones import Backbone
    cfg = json.loads((trained/'run'/'config.json').read_text())
    assert (cfg['truncation'], cfg['max_tokens'], cfg['style']) == ('end', BUDGET, STYLE)
    bb = Backbone.from_pretrained(trained/'run'/'final')
    assert (bb.text_format.truncation, bb.budget, bb.text_format.style) == ('end', BUDGET, STYLE)
    meta = json.loads((trained/'run'/'final'/'d2i_backbone.json').read_text())
    assert meta['text_format']['truncation'] == 'end'
    texts = {str(j['id']): j['text'] for j in lines((trained/'run'/'texts.jsonl').read_text())}
    assert texts == linearized['end']

def generate(trained, out:str, *more):
    from d2i_lit.data import load_sample
    r = d2i('generate', '--model', trained/'run'/'final', '--dialogs', Path(load_sample()[0].source), '--limit', N, '--out',
            trained/out, '--sample-steps', 1, '--guidance', 1, '--scheduler', 'ddim', '--no-progress', *more)
    assert r.returncode == 0, r.stderr[-3000:]
    prompts = {str(j['id']): j['prompt'] for j in lines((trained/out/'manifest.jsonl').read_text())}
    return prompts, json.loads((trained/out/'run.json').read_text()), r.stderr

def test_generate_uses_the_models_rule(trained, linearized):
    "Without `--truncation` the model's rule (`end`) cuts the prompts; `--truncation oldest` overrides it and says so once."
    prompts, run, err = generate(trained, 'gen')
    assert len(prompts) == N and run['truncation'] == 'end' and 'trained with' not in err
    assert prompts == {k: linearized['end'][k] for k in prompts}
    prompts2, run2, err2 = generate(trained, 'gen-oldest', '--truncation', 'oldest')
    assert run2['truncation'] == 'oldest' and prompts2 == {k: linearized['oldest'][k] for k in prompts2}
    assert prompts2 != prompts and err2.count("trained with truncation 'end'; prompting it with 'oldest'") == 1, err2[-2000:]

def test_evaluate_reads_dialogs_by_the_rule(trained, sample):
    "`d2i evaluate`'s clip_t texts are cut by the generated run's rule, or by `--truncation`; the record names the rule."
    from d2i_lit.metrics import write_tiny_clip
    if not (trained/'gen').exists(): generate(trained, 'gen')
    write_tiny_clip(trained/'clip')
    res = {}
    for name, more in (('run', ()), ('oldest', ('--truncation', 'oldest')), ('end', ('--truncation', 'end'))):
        out = trained/f'metrics-{name}.json'
        r = d2i('evaluate', '--generated', trained/'gen', '--real', trained/'photos', '--dialogs', Path(sample[0].source),
                '--metrics', 'clip_t', '--clip-model', trained/'clip', '--device', 'cpu', '--batch-size', 4, '--out', out,
                '--no-progress', *more)
        assert r.returncode == 0, r.stderr[-3000:]
        res[name] = json.loads(out.read_text())['clip_t']
    assert [res[k]['text_format']['truncation'] for k in ('run', 'oldest', 'end')] == ['end', 'oldest', 'end']
    assert all(res[k]['text_format']['max_tokens'] == BUDGET for k in res) # the budget comes from the generated run
    assert res['run']['dialog'] == res['end']['dialog'] # the run's rule is `end`: the same texts, the same scores
    assert res['oldest']['dialog']['mean'] != res['end']['dialog']['mean'] # other texts, other scores
    assert res['oldest']['description'] == res['end']['description'] # photo descriptions are not dialogs: no rule applies

def test_bad_rule_is_one_line(sample):
    for cmd in (('linearize', Path(sample[0].source)), ('generate', '--out', '/nonexistent/x'), ('finetune', '--out', '/nonexistent/y'),
                ('evaluate', '--generated', '/nonexistent/g', '--real', '/nonexistent/r')):
        r = d2i(*cmd, '--truncation', 'start', timeout=120)
        assert r.returncode == 2 and "--truncation: invalid choice: 'start'" in r.stderr.strip().splitlines()[-1], (cmd, r.stderr)
        assert 'Traceback' not in r.stderr
