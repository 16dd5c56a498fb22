"""`d2i linearize` run as a process: JSON lines on the bundled sample and on files; bad input gives exit status 2 and
one stderr line naming file, record and field, never a traceback."""
import json, os, subprocess, sys
import pytest

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'TOKENIZERS_PARALLELISM': 'false', 'RAYON_NUM_THREADS': '1', 'OMP_NUM_THREADS': '1'}

def d2i(*args, timeout=120):
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', 'linearize', *map(str, args)],
                          capture_output=True, text=True, env=ENV, timeout=timeout)

def rec(i, *dialogue):
    return dict(dialogue=[dict(message=m, share_photo=sp, user_id=u) for u,m,sp in dialogue], dialogue_id=i,
                photo_description='Objects in the photo: Dog', photo_url='http://x/y.jpg', photo_id=f'train/{i:04x}')

GOOD = [rec(0, (0, 'hi  there', False), (0, 'look', False), (1, 'ok', False), (0, '', True), (1, 'nice', False)),
        rec(1, (1, 'hello', False), (1, '', True))]

def test_sample_default_and_budget():
    r = d2i('--style', 'per', '--max-tokens', '77')
    assert r.returncode == 0, r.stderr
    lines = [json.loads(l) for l in r.stdout.splitlines()]
    assert len(lines) == 207 and [l['dialogue_id'] for l in lines] == list(range(207))
    assert all(list(l) == ['dialogue_id', 'text', 'n_turns', 'n_turns_dropped'] for l in lines)
    assert all(l['text'].startswith('[PER') for l in lines) and any(l['n_turns_dropped'] for l in lines)
    from d2i_lit.linearize import clip_tokenizer
    tok = clip_tokenizer()
    n = [len(tok(l['text'], add_special_tokens=False)['input_ids']) for l in lines]
    assert max(n) <= 77 and max(n) >= 70  # BOS/EOS are not counted against the budget, and truncated texts fill it

def test_files_in_order(tmp_path):
    a, b = tmp_path/'test_00.json', tmp_path/'dev_00.json'
    a.write_text(json.dumps(GOOD)); b.write_text(json.dumps(GOOD[::-1]))
    r = d2i(a, b, '--style', 'ab')
    assert r.returncode == 0 and r.stderr == ''
    assert [json.loads(l) for l in r.stdout.splitlines()] == [
        dict(dialogue_id=0, text='A: hi there look B: ok', n_turns=2, n_turns_dropped=0),
        dict(dialogue_id=1, text='B: hello', n_turns=1, n_turns_dropped=0),
        dict(dialogue_id=1, text='B: hello', n_turns=1, n_turns_dropped=0),
        dict(dialogue_id=0, text='A: hi there look B: ok', n_turns=2, n_turns_dropped=0)]

BAD = {  # file content -> what the one stderr line must name
    'truncated': (json.dumps(GOOD)[:-20], ['record 1', 'invalid JSON at line']),
    'not_list': (json.dumps({'a': 1}), ['top level must be a JSON list']),
    'missing_field': (json.dumps([GOOD[0], {k:v for k,v in GOOD[1].items() if k != 'photo_url'}]), ['record 1', 'dialogue_id 1', "field 'photo_url'", 'missing']),
    'bad_user': (json.dumps([rec(5, (2, 'x', False), (0, '', True))]), ['record 0', 'dialogue_id 5', "field 'dialogue[0].user_id'", 'got 2']),
    'wrong_type': (json.dumps([rec(6, (0, 3, False), (0, '', True))]), ['record 0', "field 'dialogue[0].message'", 'must be a string']),
    'empty_dialogue': (json.dumps([rec(7)]), ['dialogue_id 7', "field 'dialogue'", 'empty dialogue']),
    'no_share': (json.dumps([rec(8, (0, 'x', False))]), ['dialogue_id 8', 'no share_photo entry']),
    'share_first': (json.dumps([rec(9, (0, '', True), (1, 'x', False))]), ['dialogue_id 9', 'empty context']),
    'bad_utf8': (json.dumps([rec(10, (0, 'caf_', False), (0, '', True))]).encode().replace(b'caf_', b'caf\xe9'),
                 ['record 0', 'dialogue_id 10', "field 'dialogue[0].message'", 'invalid UTF-8']),
}

@pytest.mark.parametrize('case', list(BAD))
def test_bad_input_one_line_exit_2(tmp_path, case):
    content, parts = BAD[case]
    f = tmp_path/f'{case}.json'
    f.write_bytes(content if isinstance(content, bytes) else content.encode())
    r = d2i(f)
    assert r.returncode == 2 and r.stdout == ''
    assert 'Traceback' not in r.stderr and len(r.stderr.splitlines()) == 1, r.stderr
    assert r.stderr.startswith('d2i linearize: error: ') and str(f) in r.stderr
    for p in parts: assert p in r.stderr, (p, r.stderr)

def test_skip_bad(tmp_path):
    f = tmp_path/'mixed.json'
    f.write_text(json.dumps([GOOD[0], rec(3, (0, 'x', False)), GOOD[1]]))
    r = d2i(f, '--skip-bad')
    assert r.returncode == 0 and [json.loads(l)['dialogue_id'] for l in r.stdout.splitlines()] == [0, 1]
    assert r.stderr.splitlines() == [f"d2i linearize: skipped: {f}: record 1: dialogue_id 3: field 'dialogue': no share_photo entry: no photo is shared in this dialogue",
                                     'd2i linearize: 2 dialogs loaded, 1 skipped']

def test_bad_options(tmp_path):
    r = d2i(tmp_path/'missing.json')
    assert r.returncode == 2 and 'missing.json: no such file or folder' in r.stderr and 'Traceback' not in r.stderr
    r = d2i('--tokenizer', tmp_path, '--max-tokens', '20')
    assert r.returncode == 2 and len(r.stderr.splitlines()) == 1 and 'cannot load tokenizer' in r.stderr
    r = d2i('--style', 'xml')
    assert r.returncode == 2 and 'Traceback' not in r.stderr  # argparse's own usage error

def test_older_release_without_photo_id(tmp_path):
    "The older PhotoChat release (records without `photo_id`) linearizes like the current one."
    old = [{k:v for k,v in r.items() if k != 'photo_id'} for r in GOOD]
    f = tmp_path/'test_01.json'; f.write_text(json.dumps(old))
    r = d2i(f, '--style', 'ab')
    assert r.returncode == 0 and r.stderr == '', r.stderr
    assert [json.loads(l)['text'] for l in r.stdout.splitlines()] == ['A: hi there look B: ok', 'B: hello']
