"`d2i demo --quick` as a process: the CI-sized ShapesChat experiment end to end."
import json, os, subprocess, sys, time
from pathlib import Path
import pytest

KEYS = {'model', 'style', 'stage', 'fid', 'is', 'attr_acc', 'coherence', 'n', 'seed'}
STYLES = ('hash', 'per', 'ab', 'plain')

def _run(args, timeout=300):
    env = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '2'}
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', 'demo', *args], capture_output=True, text=True, env=env, timeout=timeout)

def test_demo_quick(tmp_path):
    out = tmp_path/'run'
    t0 = time.time()
    p = _run(['--quick', '--out', str(out), '--threads', '2', '--no-progress'])
    took = time.time() - t0
    assert p.returncode == 0, p.stderr[-3000:]
    rows = json.loads((out/'results.json').read_text())
    assert isinstance(rows, list) and rows
    for r in rows:
        assert KEYS <= set(r), r.keys()
        assert r['n'] > 0 and r['seed'] == 0 and 0 <= r['attr_acc'] <= 1 and 0 <= r['coherence'] <= 1
    cells = {(r['model'], r['style'], r['stage']): r for r in rows}
    for s in STYLES: assert ('shapes-16', s, 'zero_shot') in cells
    assert ('shapes-16', 'caption', 'caption_oracle') in cells
    zs, ft = cells[('shapes-16', 'hash', 'zero_shot')], cells[('shapes-16', 'hash', 'finetuned')]
    oracle = cells[('shapes-16', 'caption', 'caption_oracle')]
    print(f"quick run {took:.0f} s; hash coherence {zs['coherence']:.3f} -> {ft['coherence']:.3f}, "
          f"attr_acc {zs['attr_acc']:.3f} -> {ft['attr_acc']:.3f}; caption oracle {oracle['attr_acc']:.3f}")
    # pre-training taught captions, not dialogs: the sharer's caption beats every linearized dialog zero-shot
    assert all(oracle['attr_acc'] > cells[('shapes-16', s, 'zero_shot')]['attr_acc'] for s in STYLES)
    # the 18-token budget binds: `[PER1]` costs the most tokens, so it drops the oldest turn (often the other speaker's
    # object) most often, and a caption-pre-trained model that reads the first mention gains from that (09c_study)
    assert cells[('shapes-16', 'per', 'zero_shot')]['attr_acc'] > zs['attr_acc']
    report = (out/'report.md').read_text()
    assert '| shapes-16 | hash | finetuned |' in report
    for f in ('metrics.png', 'loss_curves.png', 'grid.png'):
        assert (out/f).read_bytes()[:8] == b'\x89PNG\r\n\x1a\n', f
    # a rerun of the finished folder skips every stage and rewrites the same rows
    p2 = _run(['--quick', '--out', str(out), '--threads', '2', '--no-progress'], timeout=120)
    assert p2.returncode == 0, p2.stderr[-3000:]
    assert json.loads((out/'results.json').read_text()) == rows

@pytest.mark.parametrize('args, msg', [(['--finetune-steps', '-1'], 'finetune-steps'), (['--styles', 'nope'], 'nope'),
                                       (['--threads', '0'], 'threads'), (['--text', 'bytes'], "argument --text: invalid choice: 'bytes'"),
                                       (['--pretrain-corpus', 'tweets'], "argument --pretrain-corpus: invalid choice: 'tweets'"),
                                       (['--text', 'clip', '--text-budget', '2'], 'max_tokens'),
                                       (['--styles', 'hash', 'xy'], "unknown style 'xy'; choose from hash, per, ab, plain (xy: a study style"),
                                       (['--choose-lrs', '1e-4'], 'needs validation dialogs (n_valid > 0)'),
                                       (['--eval-max-tokens', '64'], "eval_max_tokens: 64 must be an integer from 4 to the model's max_tokens (18)"),
                                       (['--eval-truncations', 'start'], "invalid choice: 'start'"),
                                       (['--patterns', 'monologue'], 'monologue'),
                                       (['--image-style', 'sepia'], "invalid choice: 'sepia'")])
def test_demo_bad_input(tmp_path, args, msg):
    p = _run(['--quick', '--out', str(tmp_path/'r'), '--no-progress', *args], timeout=120)
    assert p.returncode == 2, p.stderr
    lines = p.stderr.strip().splitlines()
    assert lines[-1].startswith('d2i demo: error:') and msg in lines[-1] and 'Traceback' not in p.stderr
    assert not (tmp_path/'r').exists() # refused before a folder is made

TINY = ['--n-train', '64', '--n-test', '8', '--pretrain-steps', '2', '--finetune-steps', '2', '--unfrozen-steps', '0',
        '--threads', '1', '--no-progress']

def _rows(out): return json.loads((out/'results.json').read_text())

def test_study_options_off_change_nothing(tmp_path):
    "The study's options given at their off values (the standard pattern mix, the run's own budget and rule, default images) give the run without them."
    a, b = tmp_path/'a', tmp_path/'b'
    assert _run(['--out', str(a), *TINY, '--styles', 'hash'], timeout=600).returncode == 0
    off = ['--styles', 'hash', '--patterns', 'solo=.15', 'sharer_last=.45', 'sharer_first=.15', 'turns_only=.25', '--eval-max-tokens', '18',
           '--eval-truncations', 'oldest', '--image-style', 'default']
    p = _run(['--out', str(b), *TINY, *off], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    strip = lambda rows: [{k: v for k, v in r.items() if 'seconds' not in k} for r in rows]
    assert strip(_rows(a)) == strip(_rows(b))
    assert sorted(f.name for f in (a/'stages').iterdir()) == sorted(f.name for f in (b/'stages').iterdir())

def test_study_run(tmp_path):
    "A study run stops after its zero-shot stages, then resumes with fine-tuning chosen on data/valid; the test split is read once."
    out = tmp_path/'study'
    study = [*TINY, '--max-tokens', '24', '--eval-max-tokens', '8', '--eval-truncations', 'end', '--xy-control', '--styles', 'hash',
             'xy', '--patterns', 'turns_only', '--image-style', 'shifted']
    p = _run(['--out', str(out), *study, '--zero-shot-only'], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = _rows(out)
    zs = {(r['style'], r['stage']) for r in rows}
    styles = STYLES + ('xy',)
    at = ('zero_shot@24-end', 'zero_shot@8-oldest', 'zero_shot@8-end')
    assert zs == {(s, st) for s in styles for st in ('zero_shot',) + at} | {('caption', 'caption_oracle')}
    assert {r['max_tokens'] for r in rows if r['stage'] in at} == {24, 8}
    assert all(r['truncation'] == r['stage'].split('-')[-1] for r in rows if r['stage'] in at)
    meta = json.loads((out/'data'/'test'/'meta.json').read_text())
    assert meta['dialog_image_style']['name'] == 'shifted' and set(meta['pattern_counts']) == {'turns_only'}
    from d2i_lit.backbones import Backbone
    bb = Backbone.from_pretrained(out/'train'/'pretrain'/'final')
    assert bb.tokenizer.unk_token_id not in bb.tokenizer('X: hi Y: yes', add_special_tokens=False).input_ids # reads the control
    # resumed with fine-tuning: a learning rate and steps chosen on data/valid (the fine-tuning settings may still change)
    tune = ['--n-valid', '8', '--choose-lrs', '1e-4', '1e-3', '--choose-every', '1', '--lr-finetune', '3e-4']
    p = _run(['--out', str(out), *study, *tune], timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    choose = json.loads((out/'stages'/'choose.json').read_text())['choice']
    assert choose['n_valid'] == 8 and choose['lr'] in (1e-4, 1e-3) and choose['steps'] in (1, 2)
    assert [r['step'] for r in choose['curves']['0.001']] == [1, 2]
    ft = [r for r in _rows(out) if r['stage'] == 'finetuned']
    assert {r['style'] for r in ft} == {'hash', 'xy'}
    assert all((r['lr'], r['train_steps']) == (choose['lr'], choose['steps']) for r in ft)
    assert len(json.loads((out/'data'/'valid'/'dialogs.json').read_text())) == 8
    # once fine-tuned, its settings are fixed
    p = _run(['--out', str(out), *study, *tune[:-2], '--lr-finetune', '5e-4'], timeout=120)
    assert p.returncode == 2 and 'holds a run with other settings' in p.stderr, p.stderr[-2000:]
