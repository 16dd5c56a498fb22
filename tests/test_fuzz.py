"""Fuzz the `d2i` command line: bad options and bad inputs end in exit status 2 with one line on stderr, never a
traceback, a hang or a change to what is already on disk.

Options are drawn by hypothesis for every numeric option of every subcommand (found from the subcommands' own parsers,
so a new option is fuzzed without editing this file). Inputs are malformed PhotoChat files, drawn and hand-made.
Process-level faults (two writers, kills, FIFOs) run the console script as a process with a timeout.
"""
import contextlib, importlib, io, json, math, os, stat, subprocess, sys, tempfile
from pathlib import Path
import pytest
from hypothesis import HealthCheck, given, settings, strategies as st
from d2i_lit.cli import SUBCOMMANDS, main
from d2i_lit.core import Command

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1'}
FUZZ = settings(max_examples=int(os.environ.get('D2I_FUZZ_EXAMPLES', 60)), deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])

def run_main(*argv):
    "`d2i ARGV` in this process: (status, stdout, stderr)."
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try: rc = main(list(argv))
        except SystemExit as x: rc = x.code  # --help and argparse's own exits
    return rc, o.getvalue(), e.getvalue()

def run_d2i(*argv, timeout=120, cwd=None):
    "`d2i ARGV` as a process, as a shell runs it."
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', *map(str, argv)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, cwd=cwd)

def assert_one_line_error(rc, err, name):
    assert rc == 2, (rc, err)
    assert 'Traceback' not in err, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f'd2i {name}: error: '), err

def tree(d:Path)->dict:
    "Every file under `d` with its size, mode and modification time: what a refused command must leave as it was."
    return {str(p.relative_to(d)): (s.st_size, s.st_mode, s.st_mtime_ns)
            for p in sorted(d.rglob('*')) for s in [p.lstat()]}

def commands():
    "(command words, subcommand function) for every `d2i` subcommand, `d2i data CORPUS` for each corpus."
    from d2i_lit import cli
    out = []
    for name, (mod, attr, _) in SUBCOMMANDS.items():
        if name == 'data':
            out += [(('data', c), getattr(importlib.import_module(m), a)) for c,(m,a,_) in cli.DATA_CORPORA.items()]
        else: out.append(((name,), getattr(importlib.import_module(mod), attr)))
    return out

def numeric_options():
    "(command words, option, argparse type) for every option of every subcommand that takes a number."
    out = []
    for words, fn in commands():
        if not isinstance(fn, Command): continue
        for a in fn.parser()._actions:
            if a.option_strings and a.type is not None and getattr(a.type, '__name__', '') in ('int', 'float'):
                out.append((words, a.option_strings[0], a.type))
    return out

NUMERIC = numeric_options()

def test_every_subcommand_is_a_command():
    "Each subcommand is made by `core.cli_command`: its options come from one settings dataclass (`d2i_lit.options`)."
    missing = [' '.join(w) for w,fn in commands() if not isinstance(fn, Command)]
    assert not missing, f'subcommands not made by cli_command: {missing}'

def test_every_numeric_option_declares_its_range():
    "A bare `int`/`float` accepts 0, -1, nan and inf: each numeric option must use a range type from `core`."
    bare = [f"d2i {' '.join(w)} {o}" for w,o,t in NUMERIC if t in (int, float)]
    assert not bare, f'numeric options without a range: {bare}'
    assert len(NUMERIC) >= 10, NUMERIC

BAD_NUMBERS = st.one_of(
    st.sampled_from(['0', '-1', 'nan', 'NaN', 'inf', '-inf', '1e400', '', 'abc', '1.5.2', '0x10', '--', '1e-400']),
    st.integers(-10**12, 10**15).map(str),
    st.floats(allow_nan=True, allow_infinity=True).map(repr),
    st.text(max_size=6))

def _rejects(conv, s):
    try: conv(s)
    except Exception: return True
    return False

@FUZZ
@given(opt=st.sampled_from(NUMERIC) if NUMERIC else st.nothing(), value=BAD_NUMBERS)
def test_bad_numeric_options_are_refused(opt, value, tmp_path_factory):
    "Any value an option's range refuses stops the command at parse time: exit 2, one line naming the option."
    words, flag, conv = opt
    if not _rejects(conv, value) or value.startswith('-'): return  # a value argparse would read as an option is covered by the literal cases
    d = tmp_path_factory.mktemp('opt'); (d/'keep.txt').write_text('x'); before = tree(d)
    cwd = os.getcwd(); os.chdir(d)
    try: rc, out, err = run_main(*words, flag, value)
    finally: os.chdir(cwd)
    assert_one_line_error(rc, err, words[0])
    assert flag.replace('_', '-') in err, err
    assert tree(d) == before

@pytest.mark.parametrize('words,flag,conv', NUMERIC, ids=[f"{'-'.join(w)}{f}" for w,f,_ in NUMERIC])
def test_negative_and_nonfinite_values(words, flag, conv):
    "The literal bad values of issue 13, for every numeric option, spelled `--opt=VALUE` so a leading '-' is a value."
    for v in ('-1', 'nan', 'inf', '-inf', '1e400'):
        if not _rejects(conv, v): continue
        rc, out, err = run_main(*words, f'{flag}={v}')
        assert_one_line_error(rc, err, words[0])

# --- malformed inputs -------------------------------------------------------------------------------------------

JSON = st.recursive(st.none() | st.booleans() | st.integers(-3, 3) | st.floats(allow_nan=False) | st.text(max_size=8),
                    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.sampled_from(
                        ['dialogue_id', 'dialogue', 'photo_id', 'photo_url', 'photo_description', 'user_id', 'message',
                         'share_photo', 'x']), c, max_size=6), max_leaves=25)

@FUZZ
@given(doc=JSON)
def test_malformed_photochat_files(doc, tmp_path_factory):
    "Arbitrary JSON in a PhotoChat file: `d2i linearize` prints dialogs or a one-line error, never a traceback."
    f = tmp_path_factory.mktemp('in')/'test_00.json'; f.write_text(json.dumps(doc))
    rc, out, err = run_main('linearize', str(f))
    if rc == 0: [json.loads(l) for l in out.splitlines()]
    else: assert_one_line_error(rc, err, 'linearize')

def record(msg='hello'):
    return {'dialogue_id': 1, 'photo_id': 'test/0a1b2c3d4e5f6a7b', 'photo_url': 'https://x/0a1b.jpg', 'photo_description': 'objects: Cat',
            'dialogue': [{'user_id': 0, 'message': msg, 'share_photo': False}, {'user_id': 1, 'message': '', 'share_photo': True}]}

HAND_MADE = {
    'deeply_nested': '[' * 100_000 + ']' * 100_000,
    'lone_surrogate': json.dumps([record('hi \ud800 there')]),
    'not_utf8': b'[{"dialogue_id": "\xff\xfe"}]',
    'empty': '',
    'truncated': json.dumps([record()])[:-7],
    'not_a_list': '{"dialogue_id": 1}',
    'huge_number': '[{"dialogue_id": 1e999999}]',
}

@pytest.mark.parametrize('case', HAND_MADE)
def test_hand_made_bad_files(case, tmp_path):
    f = tmp_path/'test_00.json'
    data = HAND_MADE[case]
    f.write_bytes(data if isinstance(data, bytes) else data.encode('utf-8', 'surrogatepass'))
    rc, out, err = run_main('linearize', str(f))
    if rc == 0: assert case == 'lone_surrogate', (case, out)  # a lone surrogate may be read and replaced
    else: assert_one_line_error(rc, err, 'linearize')

def test_special_files_do_not_hang(tmp_path):
    "A FIFO inside an input folder is skipped (or refused), not opened: opening one blocks forever."
    (tmp_path/'test_00.json').write_text(json.dumps([record()]))
    os.mkfifo(tmp_path/'test_01.json')
    r = run_d2i('linearize', tmp_path, timeout=60)
    assert 'Traceback' not in r.stderr
    assert r.returncode in (0, 2), r.stderr
    if r.returncode == 2: assert_one_line_error(r.returncode, r.stderr, 'linearize')
    else: assert [json.loads(l)['dialogue_id'] for l in r.stdout.splitlines()] == [1]

@pytest.mark.parametrize('where', ['file', 'readonly'])
def test_unusable_out_folder(where, tmp_path):
    "An --out that is an existing file, or on a read-only path, is one line, and the file is untouched."
    if where == 'file':
        out = tmp_path/'out'; out.write_text('mine')
    else:
        if os.geteuid() == 0: pytest.skip('root writes through read-only modes')
        ro = tmp_path/'ro'; ro.mkdir(); ro.chmod(0o555); out = ro/'out'
    r = run_d2i('data', 'shapeschat', '--n', '4', '--out', out)
    assert_one_line_error(r.returncode, r.stderr, 'data')
    if where == 'file': assert out.read_text() == 'mine'
