"""Hostile and odd inputs, round 2 (issue 23), class by class, through the real command line (`d2i_lit.cli.main`, in
this process where a class needs many generated cases, and `python -m d2i_lit.cli` as a process where signals, umasks,
full disks or other processes are involved), on the tiny tier and a photo server on 127.0.0.1.

Classes (the issue's), and what each test draws:
1. writes outside the run folder: ids (any text, separators, control characters, NUL, `..`, 300 characters, numeric
   strings of 5,001 digits) as dialogue, photo and image ids; symbolic links planted where each command writes;
2. data loss: foreign files beside a dataset; a second fetch into a fetching folder; a demo seed folder in use;
3. silently wrong results: photos that share a file stem or differ only in case; ids that survive JSON lines;
4. hangs: bodies and headers sent a byte at a time, endless bodies, Ctrl-C;
5. one item costs the run: every other item is made, the bad one reported;
6. internal errors: templates in --base-url, 5,001-digit integers in every reader, Karpathy records, damaged
   round-trip folders, foreign log.csv, model folders' d2i_backbone.json;
7. a full disk (a small tmpfs; needs root) at every write: photos, images, checkpoints, the final model, datasets;
8. permissions: every file a run writes takes the umask's mode.

`D2I_HOSTILE_EXAMPLES` scales the generated cases (default 1: a run of a few minutes); `-m slow` runs the heavy cases
and many more examples. `pytest --hypothesis-show-statistics` counts the cases each test ran."""
import contextlib, hashlib, io, json, os, re, shutil, signal, stat, subprocess, sys, time
from pathlib import Path
from urllib.parse import quote, urlsplit
import pytest
from hypothesis import HealthCheck, Phase, given, settings, strategies as st
from PIL import Image
sys.path.insert(0, str(Path(__file__).parent))
from photo_server import PhotoServer, jpeg
from d2i_lit.cli import main
from d2i_lit.core import asset_path, read_jsonl, safe_name

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1',
       'no_proxy': '*', 'NO_PROXY': '*'}
os.environ.update(no_proxy='*', NO_PROXY='*')  # the in-process fetches too: only 127.0.0.1, never through a proxy
SCALE = float(os.environ.get('D2I_HOSTILE_EXAMPLES', 1))

def cases(n:int, slow:int|None=None):
    "Hypothesis settings: `n` examples (times D2I_HOSTILE_EXAMPLES), `slow` under -m slow."
    return settings(max_examples=max(1, int(n * SCALE)), deadline=None, print_blob=True, phases=tuple(Phase)[:-1], # no 'explain'
                    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                           HealthCheck.data_too_large, HealthCheck.large_base_example])

@pytest.fixture(autouse=True)
def _slow_only_when_asked(request):
    "`slow` cases run only when `-m` names them (or D2I_SLOW=1); a plain `pytest tests` skips them."
    if request.node.get_closest_marker('slow') and 'slow' not in (request.config.getoption('markexpr') or '') \
            and os.environ.get('D2I_SLOW') != '1':
        pytest.skip('slow hostile case: run with -m slow')

def run_main(*argv):
    "`d2i ARGV` in this process, as the console script runs it: (status, stdout, stderr)."
    o, e = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(o), contextlib.redirect_stderr(e):
        try: rc = main([str(a) for a in argv])
        except SystemExit as x: rc = x.code
    return rc, o.getvalue(), e.getvalue()

def run_d2i(*argv, timeout=300, **kw):
    "`python -m d2i_lit.cli ARGV` as a process."
    return subprocess.run([sys.executable, '-m', 'd2i_lit.cli', *map(str, argv)], capture_output=True, text=True,
                          env=ENV, timeout=timeout, **kw)

def error_line(rc, err, name):
    "The one error line of a refused command: exit 2, no traceback, the error the last line of stderr."
    assert rc == 2, (rc, err[-3000:])
    lines = err.strip().splitlines()
    assert lines and lines[-1].startswith(f'd2i {name}: error: ') and 'Traceback' not in err, err[-3000:]
    assert sum(l.startswith(f'd2i {name}: error: ') for l in lines) == 1, err[-3000:]
    return lines[-1]

def ran_or_refused(rc, err, name):
    "A command given odd input either ran (0) or refused with one line (2): never an internal error or a traceback."
    assert rc in (0, 2), (rc, err[-3000:])
    line = error_line(rc, err, name) if rc == 2 else None
    if (log := os.environ.get('D2I_HOSTILE_LOG')):  # which cases ran and which were refused, and why
        with open(log, 'a') as f: f.write(json.dumps(dict(test=os.environ.get('PYTEST_CURRENT_TEST', '').split(' ')[0], rc=rc, line=line)) + '\n')
    return line

def tree(d:Path, skip:Path|None=None)->dict:
    "Every entry under `d` (not under `skip`): kind, size, mode, modification time and link target."
    out = {}
    for p in sorted(d.rglob('*')):
        if skip is not None and (p == skip or skip in p.parents): continue
        s = p.lstat(); folder = stat.S_ISDIR(s.st_mode)  # a folder: what it holds is listed, its times are not compared
        out[str(p.relative_to(d))] = (s.st_mode, None if folder else s.st_size, None if folder else s.st_mtime_ns,
                                      os.readlink(p) if p.is_symlink() else None)
    return out

# --- strategies ---------------------------------------------------------------------------------------------------

NASTY = ['..', '../x', '../../etc/passwd', '/etc/passwd', 'a/../../b', 'x\x00y', '\x00', 'CON', 'nul.txt', '.', '...',
         ' ', '\t', 'a\u2028b', 'a\u2029b', 'a\x85b', 'a\nb', 'a\rb', '~', 'a~0123456789abcdef', '-rf', '.hidden', 'ends.',
         'A', 'a', '\u202e', 'e\u0301', 'é', '日本', '\ufeff', '%2e%2e%2f', 'a\\b', 'C:\\x', 'a/x', 'a_x', '']
CHARS = st.characters(blacklist_categories=('Cs',))  # any character but a lone surrogate (the loaders refuse those: test_fuzz)
TEXT = st.text(CHARS, max_size=24)
LONG = st.text(CHARS, min_size=250, max_size=400)
DIGITS_5001 = st.sampled_from(['7' * 5001, '1' + '0' * 5000, '-' + '9' * 5001])  # as strings: ids, not numbers
IDS = st.one_of(st.sampled_from(NASTY), TEXT, LONG, st.integers(-10**30, 10**30), DIGITS_5001)

def records(n:int)->list[dict]:
    "`n` real PhotoChat records (the bundled sample), to be given hostile fields."
    recs = json.loads(asset_path('photochat_test_00_first207.json').read_text())
    return [dict(recs[i % len(recs)]) for i in range(n)]

def run_folder(root:Path)->Path:
    "`root/run/out`, its parent made: what a command writes must stay in `out`."
    (root/'run').mkdir(exist_ok=True); return root/'run'/'out'

def write_json(p:Path, obj)->Path:
    p.parent.mkdir(parents=True, exist_ok=True); p.write_text(json.dumps(obj)); return p

def victims(root:Path)->dict:
    "Things outside the run folder a link may point at: a file, a folder with a file, a path that does not exist."
    (root/'victim_dir').mkdir(exist_ok=True); (root/'victim_dir'/'keep.txt').write_text('mine')
    (root/'victim.txt').write_text('victim')
    return dict(file=root/'victim.txt', dir=root/'victim_dir', missing=root/'victim_dir'/'created_by_a_link')

def victims_untouched(v:dict):
    assert v['file'].read_text() == 'victim' and (v['dir']/'keep.txt').read_text() == 'mine'
    assert sorted(p.name for p in v['dir'].iterdir()) == ['keep.txt'] and not v['missing'].exists()

# --- the photo server: any path answers a PNG whose colour is the path's hash ---------------------------------------

def colour(path:str)->tuple:
    h = hashlib.sha256(path.encode()).digest(); return (h[0], h[1], h[2])

def png(path:str)->bytes:
    buf = io.BytesIO(); Image.new('RGB', (8, 6), colour(path)).save(buf, 'PNG'); return buf.getvalue()

@pytest.fixture(scope='module')
def server():
    with PhotoServer({}, fallback=lambda path: dict(body=png(path), type='image/png')) as srv: yield srv

# === 1, 3, 5: ids as file names: photos ============================================================================

PHOTO_IDS = st.one_of(st.sampled_from(['train/abc', 'test/abc', 'abc', 'train/ABC', 'x/../y', '', 'a/photo', 'b/photo',
                                       '../../etc/x', 'train/' + 'f' * 300, 'train/a\x00b', 'train/a\nb']), IDS.map(str))
URL_NAMES = st.one_of(st.sampled_from(['a/photo.jpg', 'b/photo.jpg', 'photo.jpg', 'PHOTO.jpg', '..%2f..%2fx.jpg',
                                       'x' * 300 + '.jpg', '%00.jpg', 'get?id=1', '']), TEXT.map(lambda s: quote(s, safe='/')))

def photo_record(rec:dict, did, pid:str, url:str)->dict:
    r = dict(rec, dialogue_id=did, photo_url=url)
    if pid: r['photo_id'] = pid
    else: r.pop('photo_id', None)
    return r

def check_fetch(recs:list[dict], out:Path, base_url:str|None):
    "Every record pairs with the photo of its own key (photo_id, else URL), or with none: never another record's."
    from d2i_lit.data import load_photochat, photo_key
    first = {}
    for r in recs:  # the URL fetched for a key: its first record's (a mirror: its photo_id's)
        k = photo_key(r.get('photo_id', ''), r['photo_url'])
        if base_url: first.setdefault(k, base_url.replace('{photo_id}', quote(r.get('photo_id', ''), safe='/')) if r.get('photo_id') else '')
        else: first.setdefault(k, r['photo_url'])
    rep = json.loads((out/'report.json').read_text())
    assert rep['photos'] == len(first) and rep['dialogs'] == len(recs)
    failed = {f['key'] for f in rep['failures']}
    assert all(f['status'] == 'failed' for f in rep['failures']), rep['failures']  # the server answers every good URL
    ds = load_photochat(out.parent.parent/'in'/'test_00.json', images_dir=out)
    for r, d in zip(recs, ds):
        k = photo_key(d.photo_id, d.photo_url)
        if k in failed: assert d.image_path is None, (k, d.image_path)  # no other record's photo by a looser name
        else:
            assert d.image_path is not None and d.image_path.parent == out, (k, d.image_path)
            got = Image.open(d.image_path).convert('RGB').getpixel((0, 0))
            assert got == colour(urlsplit(first[k]).path + ('?' + urlsplit(first[k]).query if urlsplit(first[k]).query else '')), (k, first[k])
    names = {r['name']: r['key'] for r in read_jsonl(out/'photos.jsonl')}
    assert len(names) == len(set(names.values())) == len(first) - len(failed)  # each photo's file reverses to its key
    for p in out.iterdir():
        assert p.name in ('.lock', 'fetch.json', 'photos.jsonl', 'report.json') or \
            (p.is_file() and p.suffix in ('.png', '.jpg') and p.stem in names and len(p.name.encode()) <= 255), p.name

@cases(12)
@given(rows=st.lists(st.tuples(IDS, PHOTO_IDS, URL_NAMES), min_size=1, max_size=10), mirror=st.booleans())
def test_photo_ids_never_escape_nor_collide(rows, mirror, server, tmp_path_factory):
    "Classes 1, 3, 5: any dialogue id, photo id or URL file name: the fetch runs, writes inside --out only, every photo "
    "under a name of its own (photos.jsonl reverses it), each record pairs with its own photo or none; a rerun resumes."
    root = tmp_path_factory.mktemp('photos'); v = victims(root)
    recs = [photo_record(rec, did, pid, server.url(f'/p/{i % 3}/{u}') if u else '') for rec, (did, pid, u), i
            in zip(records(len(rows)), rows, range(len(rows)))]
    f = write_json(root/'in'/'test_00.json', recs); out = run_folder(root)
    base = server.url('/oi/{photo_id}.png') if mirror else None
    before = tree(root, skip=out)
    rc, _, err = run_main('data', 'photochat', f, '--out', out, '--workers', 4, '--timeout', 10, '--retries', 0,
                          '--no-progress', *(['--base-url', base] if base else []))
    assert rc == 0, err
    assert tree(root, skip=out) == before; victims_untouched(v)
    check_fetch(recs, out, base)
    rc, _, err = run_main('data', 'photochat', f, '--out', out, '--no-progress', *(['--base-url', base] if base else []))
    rep = json.loads((out/'report.json').read_text())
    assert rc == 0 and rep['fetched'] == 0 and rep['already_present'] == rep['counts']['ok'], err

def test_photo_examples_of_the_issue(server, tmp_path):
    "The issue's own: `../` in a dialogue_id, 300 characters, NUL; `…/a/photo.jpg` vs `…/b/photo.jpg`; `train/abc` vs `test/abc`."
    recs = [photo_record(r, did, pid, server.url(u)) for r, (did, pid, u) in zip(records(8), [
        ('../../escaped', '', '/get?id=1'), ('x' * 300, '', '/get?id=2'), ('a\x00b', '', '/get?id=3'),
        (4, '', '/a/photo.jpg'), (5, '', '/b/photo.jpg'), (6, 'train/abc', '/1.jpg'), (7, 'test/abc', '/2.jpg'),
        (8, 'train/' + 'y' * 300, '/3.jpg')])]
    f = write_json(tmp_path/'in'/'test_00.json', recs); out = tmp_path/'run'/'out'
    r = run_d2i('data', 'photochat', f, '--out', out, '--no-progress', '--retries', 0)
    assert r.returncode == 0, r.stderr
    assert r.stderr.strip().splitlines()[-1].startswith(f'8 of 8 photos in {out} (8 fetched')
    assert sorted(p.name for p in tmp_path.iterdir()) == ['in', 'run'] and sorted(os.listdir(tmp_path/'run')) == ['out']
    check_fetch(recs, out, None)

# === 1, 3, 5: ids as file names: generated images =====================================================================

@cases(3)
@given(ids=st.lists(IDS, min_size=1, max_size=6, unique_by=str))
def test_generate_any_ids(ids, tmp_path_factory):
    "Any dialogue ids: every image inside OUT/images under a name of its own, the manifest gives each id back exactly "
    "(U+2028 and U+0085 too), nothing written outside --out; a rerun makes nothing again."
    root = tmp_path_factory.mktemp('gen'); v = victims(root)
    f = write_json(root/'in'/'d.json', [dict(r, dialogue_id=i) for r, i in zip(records(len(ids)), ids)])
    out = run_folder(root); before = tree(root, skip=out)
    args = ('generate', '--model', 'tiny-sd', '--dialogs', f, '--out', out, '--sample-steps', 1, '--batch-size', 8,
            '--no-progress')
    rc, _, err = run_main(*args)
    assert rc == 0, err
    assert tree(root, skip=out) == before; victims_untouched(v)
    recs = read_jsonl(out/'manifest.jsonl')
    assert [r['id'] for r in recs] == ids  # the exact ids, their JSON types kept
    files = [out/r['file'] for r in recs]
    assert all(p.parent == out/'images' and p.is_file() for p in files) and len(set(files)) == len(ids)
    assert sorted(p.name for p in (out/'images').iterdir()) == sorted(p.name for p in files)
    stamps = tree(out)
    rc, _, err = run_main(*args)
    assert rc == 0 and {k: s for k, s in tree(out).items() if k.startswith('images')} == \
        {k: s for k, s in stamps.items() if k.startswith('images')}, err

@cases(3)
@given(ids=st.lists(IDS, min_size=2, max_size=5, unique_by=str), dup=st.integers(0, 4), cmd=st.sampled_from(['generate', 'evaluate']))
def test_repeated_ids_are_refused_before_work(ids, dup, cmd, tmp_path_factory):
    "Class 3: two records with one id key one output: generate and evaluate refuse them, one line, before any image."
    root = tmp_path_factory.mktemp('dup')
    ids = ids + [ids[dup % len(ids)]]
    f = write_json(root/'d.json', [dict(r, dialogue_id=i) for r, i in zip(records(len(ids)), ids)])
    if cmd == 'generate': argv = ('generate', '--model', 'tiny-sd', '--dialogs', f, '--out', root/'out', '--no-progress')
    else:
        (root/'gen').mkdir(); (root/'real').mkdir()
        (root/'gen'/'manifest.jsonl').write_text(''.join(json.dumps(dict(id=i, file=f'{n}.png')) + '\n' for n, i in enumerate(ids)))
        for n in range(len(ids)): Image.new('RGB', (8, 8)).save(root/'gen'/f'{n}.png')
        argv = ('evaluate', '--generated', root/'gen', '--real', root/'real', '--dialogs', f, '--metrics', 'clip_t')
    assert 'share the id' in error_line(*run_main(*argv)[::2], cmd)
    assert not list(root.glob('out/images/*')) and not (root/'gen'/'metrics.json').exists()

# === 1, 3: round-trip items whose ids clean to one name =================================================================

@pytest.fixture(scope='module')
def rt_folder(tmp_path_factory):
    "A folder of four images whose ids collide once cleaned: `a/x`, `a_x`, `A_X`, `a~x`."
    d = tmp_path_factory.mktemp('rt_in')
    for i, rel in enumerate(['a/x.png', 'a_x.png', 'A_X.png', 'a~x.png']):
        (d/rel).parent.mkdir(parents=True, exist_ok=True); Image.new('RGB', (16, 16), (60 * i, 20, 200)).save(d/rel)
    return d

RT = ('roundtrip', '--direction', 'i2t2i', '--captioner', 'tiny', '--generator', 'tiny', '--sample-steps', 1,
      '--boot', 5, '--similarity', 'pixels', '--no-progress')

def test_roundtrip_ids_that_clean_alike(rt_folder, tmp_path):
    "Items `a/x` and `a_x` (and `A_X`, `a~x`) write their own image files, each named in candidates.jsonl."
    out = tmp_path/'out'
    rc, _, err = run_main(*RT, '--k', 2, '--data', rt_folder, '--format', 'folder', '--out', out)
    assert rc == 0, err
    cands = read_jsonl(out/'candidates.jsonl')
    assert sorted({c['id'] for c in cands}) == sorted(['a/x', 'a_x', 'A_X', 'a~x']) and len(cands) == 8
    files = {c['file'] for c in cands}
    assert len(files) == 8 and all((out/f).is_file() and (out/f).parent == out/'images' for f in files)
    assert sorted(os.listdir(out/'images')) == sorted(Path(f).name for f in files)

@pytest.mark.xfail(strict=True, reason="core.safe_name keeps a plain id's case: `A_X` and `a_x` are one file on a case-blind "
                                       "disk (macOS, Windows); left to the lead (00_core: a plain id without capitals)")
def test_safe_names_differ_in_more_than_case():
    ids = ['a_x', 'A_X', 'Readme', 'README', 'x1', 'X1']
    assert len({safe_name(i).lower() for i in ids}) == len(ids)

# === 1: symbolic links planted where each command writes ============================================================

LINK_TO = st.sampled_from(['file', 'dir', 'missing'])

def plant(out:Path, names, target:str, v:dict):
    "Symbolic links to the victim `target` at `names` inside `out` (none inside a folder already made a link)."
    for n in sorted(names, key=len):
        p = out/n
        if any((out/q).is_symlink() for q in Path(n).parents if str(q) != '.'): continue
        if p.is_symlink() or p.is_file(): p.unlink()
        elif p.is_dir(): shutil.rmtree(p)
        p.parent.mkdir(parents=True, exist_ok=True); os.symlink(v[target], p)

PHOTO_WRITES = ['.lock', 'report.json', 'photos.jsonl', 'fetch.json', 'abc.png', 'abc.jpg', '.abc.part.tmp', 'new.png',
                f"{safe_name('t/dup', hashed=True)}.png"]

@cases(10)
@given(names=st.lists(st.sampled_from(PHOTO_WRITES), min_size=1, max_size=4, unique=True), target=LINK_TO)
def test_links_in_a_photo_folder(names, target, server, tmp_path_factory):
    "Links planted in a fetched folder (its lock, report, manifest, record, photos, temporaries): a rerun replaces or "
    "refuses them; what they point at is never written."
    root = tmp_path_factory.mktemp('plinks'); v = victims(root); out = root/'out'
    recs = [photo_record(r, i, pid, server.url(f'/l/{i}.png')) for i, (r, pid) in
            enumerate(zip(records(4), ['t/abc', 't/new', 't/dup', 'u/dup']))]
    f = write_json(root/'in'/'test_00.json', recs[:1])
    assert run_main('data', 'photochat', f, '--out', out, '--no-progress')[0] == 0
    plant(out, names, target, v)
    write_json(f, recs)
    rc, _, err = run_main('data', 'photochat', f, '--out', out, '--no-progress', '--retries', 0)
    ran_or_refused(rc, err, 'data')
    victims_untouched(v)

GEN_WRITES = ['.lock', 'manifest.jsonl', 'run.json', 'skipped.jsonl', 'manifest.rank0.jsonl', 'skipped.rank0.jsonl',
              'images', 'images/2.png', 'images/.2.png.x.tmp']

@cases(4)
@given(names=st.lists(st.sampled_from(GEN_WRITES), min_size=1, max_size=3, unique=True), target=LINK_TO)
def test_links_in_a_generate_folder(names, target, tmp_path_factory):
    "Links planted in a generate run folder before it resumes: replaced or refused; their targets never written."
    root = tmp_path_factory.mktemp('glinks'); v = victims(root); out = root/'out'
    f = write_json(root/'d.json', [dict(r, dialogue_id=i) for i, r in enumerate(records(4))])
    args = ('generate', '--model', 'tiny-sd', '--dialogs', f, '--out', out, '--sample-steps', 1, '--no-progress')
    assert run_main(*args, '--limit', 2)[0] == 0
    plant(out, names, target, v)
    ran_or_refused(*run_main(*args, '--limit', 4)[::2], 'generate')
    victims_untouched(v)

FT_WRITES = ['.lock', 'config.json', 'log.csv', 'texts.jsonl', 'ckpts', 'ckpts/checkpoint-4', 'final', '.final.old',
             'final/unet', 'ckpts/.checkpoint-4.x.tmp']

@pytest.fixture(scope='module')
def shapes_data(tmp_path_factory):
    d = tmp_path_factory.mktemp('sc')/'sc'
    assert run_main('data', 'shapeschat', '--n', 16, '--out', d)[0] == 0
    return d

FT = ('finetune', '--model', 'shapes', '--batch-size', 8, '--ema', 0, '--checkpoint-every', 2, '--no-progress')

@cases(4)
@given(names=st.lists(st.sampled_from(FT_WRITES), min_size=1, max_size=3, unique=True), target=LINK_TO)
def test_links_in_a_finetune_folder(names, target, shapes_data, tmp_path_factory):
    "Links planted in a fine-tuning run before it resumes (its config, log, texts, checkpoints, final model): the "
    "resumed run replaces or refuses them; their targets are never written."
    root = tmp_path_factory.mktemp('flinks'); v = victims(root); out = root/'out'
    assert run_main(*FT, '--data', shapes_data, '--steps', 2, '--out', out)[0] == 0
    plant(out, names, target, v)
    ran_or_refused(*run_main(*FT, '--data', shapes_data, '--steps', 4, '--resume', 'latest', '--out', out)[::2], 'finetune')
    victims_untouched(v)

RT_WRITES = ['.lock', 'run.json', 'items.jsonl', 'candidates.jsonl', 'candidates.rank0.jsonl', 'images', 'scores.json',
             'rank.png', 'skipped.jsonl']

@cases(3)
@given(names=st.lists(st.sampled_from(RT_WRITES), min_size=1, max_size=3, unique=True), target=LINK_TO,
       analyze=st.booleans())
def test_links_in_a_roundtrip_folder(names, target, analyze, rt_folder, tmp_path_factory):
    "Links planted in a round-trip folder before a rerun or `--analyze`: replaced or refused; targets never written."
    root = tmp_path_factory.mktemp('rlinks'); v = victims(root); out = root/'out'
    args = (*RT, '--k', 1, '--data', rt_folder, '--format', 'folder', '--out', out)
    assert run_main(*args, '--limit', 2)[0] == 0
    plant(out, names, target, v)
    ran_or_refused(*run_main(*(RT[:1] + ('--analyze', out, '--boot', 5) if analyze else args + ('--limit', 2)))[::2], 'roundtrip')
    victims_untouched(v)

# === 2: data loss ===================================================================================================

FOREIGN = st.dictionaries(st.text(st.characters(whitelist_categories=('Ll', 'Lu', 'Nd')), min_size=1, max_size=12)
                          .filter(lambda n: n not in ('images', 'caption_images', 'dialogs', 'captions', 'meta')),
                          st.one_of(st.binary(max_size=64), st.just(None)), min_size=1, max_size=5)

@cases(8)
@given(foreign=FOREIGN, n=st.integers(4, 12))
def test_regenerating_a_dataset_keeps_what_is_not_its(foreign, n, tmp_path_factory):
    "Class 2: files and folders beside a ShapesChat dataset (a run in sc/ft, notes) survive `d2i data shapeschat` again."
    sc = tmp_path_factory.mktemp('keep')/'sc'
    assert run_main('data', 'shapeschat', '--n', 4, '--out', sc)[0] == 0
    for name, data in foreign.items():
        if data is None: (sc/name).mkdir(); (sc/name/'run.json').write_text('{}')
        else: (sc/name).write_bytes(data)
    kept = {k: s for k, s in tree(sc).items() if k.split('/')[0] in foreign}
    rc, _, err = run_main('data', 'shapeschat', '--n', n, '--seed', 1, '--out', sc)
    assert rc == 0, err
    assert {k: s for k, s in tree(sc).items() if k.split('/')[0] in foreign} == kept
    assert len(json.loads((sc/'dialogs.json').read_text())) == n

def test_second_fetch_is_refused_and_the_first_finishes(tmp_path):
    "Class 2: a second `d2i data photochat` into a folder being fetched: one line, and it removes nothing of the first's."
    n = 6
    with PhotoServer({f'/s/{i}.jpg': dict(body=jpeg(colour=(9 * i, 0, 0)), trickle=0.002) for i in range(n)}) as srv:
        recs = [photo_record(r, i, f'train/s{i}', srv.url(f'/s/{i}.jpg')) for i, r in enumerate(records(n))]
        f = write_json(tmp_path/'test_00.json', recs); out = tmp_path/'photos'
        a = subprocess.Popen([sys.executable, '-m', 'd2i_lit.cli', 'data', 'photochat', str(f), '--out', str(out),
                              '--workers', '2', '--no-progress'], env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        t0 = time.time()
        while srv.open == 0: assert a.poll() is None and time.time() - t0 < 60, a.communicate(); time.sleep(0.02)
        b = run_d2i('data', 'photochat', f, '--out', out, '--no-progress')
        assert a.poll() is None, 'the first fetch ended before the second tried: make it slower'
        assert 'in use by another d2i process' in error_line(b.returncode, b.stderr, 'data')
        _, err = a.communicate(timeout=120)
    assert a.returncode == 0 and err.strip().splitlines()[-1].startswith(f'{n} of {n} photos'), err
    assert json.loads((out/'report.json').read_text())['counts']['ok'] == n and not list(out.glob('.*.tmp'))

def test_demo_seed_folder_in_use_is_refused(tmp_path):
    "Class 2: `d2i demo --seeds 0 1 --out D` while another process holds D/seed-0 (a `d2i demo --out D/seed-0`)."
    from filelock import FileLock
    (tmp_path/'D'/'seed-0').mkdir(parents=True)
    with FileLock(tmp_path/'D'/'seed-0'/'.lock'):
        r = run_d2i('demo', '--quick', '--seeds', 0, 1, '--out', tmp_path/'D', timeout=120)
    assert 'seed-0 is in use by another d2i process' in error_line(r.returncode, r.stderr, 'demo')
    assert sorted(os.listdir(tmp_path/'D'/'seed-0')) == ['.lock']

# === 3: a changed model is not resumed into ==============================================================================

def test_generate_refuses_to_resume_with_other_weights(tmp_path):
    from d2i_lit.backbones import tiny_backbone
    import torch
    m = tmp_path/'model'; tiny_backbone('sd').save_pretrained(m)
    f = write_json(tmp_path/'d.json', records(3))
    args = ('generate', '--model', m, '--dialogs', f, '--out', tmp_path/'out', '--sample-steps', 1, '--no-progress')
    assert run_main(*args, '--limit', 1)[0] == 0
    bb = tiny_backbone('sd')
    with torch.no_grad(): next(bb.noise_predictor.parameters()).add_(1)
    bb.save_pretrained(m)
    before = tree(tmp_path/'out')
    assert 'weights' in error_line(*run_main(*args, '--limit', 3)[::2], 'generate')
    assert tree(tmp_path/'out') == before

# === 4: hangs ==========================================================================================================

@pytest.mark.parametrize('how', ['trickle', 'slow_headers', 'endless', 'endless_trickle'])
def test_a_photo_never_outlasts_its_deadline(how, tmp_path):
    "A server that sends a byte every 0.2 s (body or headers), or a body that never ends: cut at --timeout."
    route = dict(body=jpeg((200, 200)), **{'trickle': dict(trickle=0.2), 'slow_headers': dict(slow_headers=0.2),
                                         'endless': dict(endless=True), 'endless_trickle': dict(endless=True, trickle=0.2)}[how])
    with PhotoServer({'/slow.jpg': route}) as srv:
        f = write_json(tmp_path/'test_00.json', [photo_record(records(1)[0], 1, 'train/slow', srv.url('/slow.jpg'))])
        t0 = time.time()
        rc, _, err = run_main('data', 'photochat', f, '--out', tmp_path/'out', '--timeout', 1.5, '--retries', 0,
                              '--max-mb', 1024, '--no-progress')
        took = time.time() - t0
    assert rc == 0, err
    fail = json.loads((tmp_path/'out'/'report.json').read_text())['failures']
    assert [x['status'] for x in fail] == ['timed_out'] and 'whole download' in fail[0]['error']
    assert took < 4, took  # 1.5 s and the start, not the 40 s to a minute the server would take

def test_ctrl_c_stops_at_once_and_a_rerun_resumes(tmp_path):
    "Class 4: SIGINT during a fetch: the process ends within seconds (not after every queued photo), with status 130; "
    "the photos it finished are kept whole and the rerun fetches only the rest."
    n = 40
    routes = {f'/c/{i}.jpg': dict(body=jpeg((40, 30), (i, 0, 0)), delay=0.02 if i < 4 else 3) for i in range(n)}
    with PhotoServer(routes) as srv:
        recs = [photo_record(r, i, f'train/c{i}', srv.url(f'/c/{i}.jpg')) for i, r in enumerate(records(n))]
        f = write_json(tmp_path/'test_00.json', recs); out = tmp_path/'photos'
        p = subprocess.Popen([sys.executable, '-m', 'd2i_lit.cli', 'data', 'photochat', str(f), '--out', str(out),
                              '--workers', '4', '--timeout', '30', '--no-progress'], env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             # SIGINT handled as in a terminal: a runner started in the background leaves it ignored,
                             # and a child that inherits the ignore never sees Ctrl-C
                             preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        t0 = time.time()
        while len(list(out.glob('*.jpg'))) < 4 or srv.open < 2:
            assert p.poll() is None and time.time() - t0 < 60, p.communicate(); time.sleep(0.02)
        p.send_signal(signal.SIGINT); t1 = time.time()
        _, err = p.communicate(timeout=60)
        took = time.time() - t1
        assert p.returncode == 130 and err.strip().splitlines()[-1] == 'd2i data: interrupted' and took < 2.5, (took, err)
        done = sorted(out.glob('*.jpg'))
        assert 4 <= len(done) < n and not list(out.glob('.*.tmp'))
        for x in done: Image.open(x).load()
        for i in range(n): srv.routes[f'/c/{i}.jpg']['delay'] = 0
        before = dict(srv.counts)
        r = run_d2i('data', 'photochat', f, '--out', out, '--workers', 8, '--no-progress')
        rep = json.loads((out/'report.json').read_text())
        assert r.returncode == 0 and rep['counts']['ok'] == n and rep['already_present'] == len(done), r.stderr
        assert all(srv.counts[f'/c/{i}.jpg'] == before.get(f'/c/{i}.jpg', 0) for i in range(4))  # not asked again

# === 6: internal errors become one line ==================================================================================

TEMPLATE = st.lists(st.sampled_from(list('{}/:.abc') + ['{photo_id}', '{id}', '{x}', '{0}', '{photo_id.__class__}',
                                                          '{photo_id[0]}', '{{', '}}', '{!r}', '{photo_id:>9}']),
                    max_size=8).map(''.join)

@cases(30)
@given(tail=TEMPLATE, scheme=st.sampled_from(['http://127.0.0.1:9/', 'https://h/', 'ftp://h/', 'file:///', '', 'http://[::1/']))
def test_base_url_templates(tail, scheme, tmp_path_factory):
    "Any --base-url: a fetch (port 9 answers nothing), or one line with exit 2 for an unknown {field}, a brace without its "
    "pair or a scheme other than http(s); never an internal error."
    root = tmp_path_factory.mktemp('tpl')
    f = write_json(root/'test_00.json', records(1))
    rc, _, err = run_main('data', 'photochat', f, '--out', root/'out', '--base-url', scheme + tail, '--retries', 0,
                          '--timeout', 1, '--no-progress')
    line = ran_or_refused(rc, err, 'data')
    fields = re.findall(r'\{([^{}]*)\}', tail)
    if any(x not in ('photo_id', 'id') for x in fields) or not scheme.startswith('http'): assert line is not None
    if line is not None: assert not (root/'out').exists()  # refused before the folder is made

BIG = '9' * 5001

@pytest.mark.parametrize('where', ['dialogue_id', 'user_id', 'photo_id_number', 'mmdialog'])
@pytest.mark.parametrize('cmd', ['linearize', 'photochat', 'generate'])
def test_integers_past_pythons_limit(cmd, where, tmp_path):
    "A 5,001-digit JSON integer anywhere in a dialog file: one line naming file, record and field."
    rec = records(2)
    text = json.dumps(rec)
    if where == 'dialogue_id': text = text.replace(f'"dialogue_id": {rec[1]["dialogue_id"]}', f'"dialogue_id": {BIG}', 1)
    elif where == 'user_id': text = text.replace('"user_id": 1', f'"user_id": {BIG}', 1)
    elif where == 'photo_id_number': text = text.replace(f'"photo_id": "{rec[0]["photo_id"]}"', f'"photo_id": {BIG}', 1)
    f = tmp_path/('conversations.json' if where == 'mmdialog' else 'test_00.json')
    f.write_text(f'{{"conversation_id": {BIG}, "conversation": []}}' if where == 'mmdialog' else text)
    words = {'linearize': ('linearize', f), 'photochat': ('data', 'photochat', f, '--out', tmp_path/'o'),
             'generate': ('generate', '--model', 'tiny-sd', '--dialogs', f, '--out', tmp_path/'o')}[cmd]
    line = error_line(*run_main(*words)[::2], words[0])
    assert '5001 digits' in line and str(f) in line and 'field' in line, line
    assert not (tmp_path/'o').exists()

KARPATHY_VALUES = st.one_of(st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), TEXT,
                            st.lists(st.integers(), max_size=2), st.dictionaries(TEXT, st.integers(), max_size=2))

@cases(20)
@given(field=st.sampled_from(['filename', 'filepath', 'sentences', 'split', 'cocoid', 'imgid']), value=KARPATHY_VALUES)
def test_karpathy_records(field, value, tmp_path_factory):
    "A Karpathy record with any JSON value in any field: one line naming file, record and field (images absent: never a run)."
    root = tmp_path_factory.mktemp('kp')
    img = dict(filepath='val2014', filename='x.jpg', split='test', sentences=[dict(raw='a cat')], cocoid=1)
    f = write_json(root/'dataset_coco.json', dict(images=[img, dict(img, **{field: value})]))
    rc, _, err = run_main(*RT, '--k', 1, '--data', f, '--format', 'karpathy', '--out', root/'out')
    error_line(rc, err, 'roundtrip')
    assert not (root/'out').exists()

@pytest.fixture(scope='module')
def rt_done(rt_folder, tmp_path_factory):
    out = tmp_path_factory.mktemp('rt_done')/'out'
    assert run_main(*RT, '--k', 2, '--data', rt_folder, '--format', 'folder', '--out', out)[0] == 0
    return out

JSON_VALUES = st.recursive(st.none() | st.booleans() | st.integers(-3, 10**6) | st.floats() | TEXT,
                           lambda c: st.lists(c, max_size=3) | st.dictionaries(TEXT, c, max_size=3), max_leaves=6)

@cases(25)
@given(file=st.sampled_from(['candidates.jsonl', 'items.jsonl', 'run.json']), line=st.integers(0, 7),
       field=st.sampled_from(['id', 'candidate', 'caption', 'file', 'image_cos', 'input', 'references', 'k', 'direction']),
       value=JSON_VALUES, cut=st.one_of(st.none(), st.integers(0, 400)))
def test_damaged_roundtrip_folder_analyze(file, line, field, value, cut, rt_done, tmp_path_factory):
    "`d2i roundtrip --analyze` on a folder whose run.json, items.jsonl or candidates.jsonl has any field changed, or is "
    "cut short: it analyses or refuses with one line; never an internal error."
    out = tmp_path_factory.mktemp('dmg')/'out'; shutil.copytree(rt_done, out)
    p = out/file
    if file == 'run.json': p.write_text(json.dumps({**json.loads(p.read_text()), field: value}))
    else:
        recs = read_jsonl(p); recs[line % len(recs)][field] = value
        p.write_text(''.join(json.dumps(r, ensure_ascii=False) + '\n' for r in recs))
    if cut is not None: p.write_bytes(p.read_bytes()[:cut])
    ran_or_refused(*run_main('roundtrip', '--analyze', out, '--boot', 5)[::2], 'roundtrip')

@cases(3)
@given(log=st.one_of(st.binary(max_size=200), st.text(max_size=200).map(str.encode),
                     st.sampled_from([b'', b'step\n', b'step,loss,lr\nx,y,z\n', b'a,b\n1,2\n', b'\xff\xfe',
                                      b'step,loss,lr\n99999999999999999999,1,1\n'])))
def test_foreign_log_csv(log, shapes_data, tmp_path_factory):
    "A log.csv that is not d2i's (any bytes) in a run folder that resumes: it resumes or refuses with one line."
    out = tmp_path_factory.mktemp('log')/'out'
    assert run_main(*FT, '--data', shapes_data, '--steps', 2, '--out', out)[0] == 0
    (out/'log.csv').write_bytes(log)
    ran_or_refused(*run_main(*FT, '--data', shapes_data, '--steps', 4, '--resume', 'latest', '--out', out)[::2], 'finetune')

@pytest.fixture(scope='module')
def tiny_sd_folder(tmp_path_factory):
    from d2i_lit.backbones import tiny_backbone
    m = tmp_path_factory.mktemp('model')/'tiny'; tiny_backbone('sd').save_pretrained(m); return m

@cases(12)
@given(field=st.sampled_from(['resolution', 'positions', 'max_tokens', 'text_budget', 'kind', 'text_format']),
       value=st.one_of(st.sampled_from([40_000, 10**9, 10**30, -1, 0, 7, 4097, 1.5, 'big', None, [], {}]), JSON_VALUES),
       whole=st.sampled_from([None, b'', b'{', b'[]', b'\xff']))
def test_model_folder_settings(field, value, whole, tiny_sd_folder, tmp_path_factory):
    "A model folder whose d2i_backbone.json asks for anything (a 40,000- or 10^9-pixel resolution, a damaged file): "
    "generation runs at a checked size or refuses with one line; no multi-GB allocation is attempted."
    root = tmp_path_factory.mktemp('meta'); m = root/'m'; shutil.copytree(tiny_sd_folder, m)
    meta = json.loads((m/'d2i_backbone.json').read_text())
    (m/'d2i_backbone.json').write_bytes(whole if whole is not None else json.dumps({**meta, field: value}).encode())
    f = write_json(root/'d.json', records(1))
    rc, _, err = run_main('generate', '--model', m, '--dialogs', f, '--out', root/'out', '--sample-steps', 1, '--no-progress')
    ran_or_refused(rc, err, 'generate')

def test_evaluate_with_a_damaged_run_json(tmp_path):
    gen = tmp_path/'gen'; gen.mkdir(); (gen/'run.json').write_text('{')
    (gen/'manifest.jsonl').write_text('')
    sc = tmp_path/'sc'
    assert run_main('data', 'shapeschat', '--n', 4, '--out', sc)[0] == 0
    ran_or_refused(*run_main('evaluate', '--generated', gen, '--real', sc, '--metrics', 'clip_t')[::2], 'evaluate')

# === 7: a full disk is one line, exit 2, at every write ===================================================================

@contextlib.contextmanager
def small_disk(path:Path, size:str):
    "A tmpfs of `size` mounted at `path` (needs root; skipped otherwise)."
    path.mkdir(parents=True, exist_ok=True)
    if os.geteuid() != 0 or subprocess.run(['mount', '-t', 'tmpfs', '-o', f'size={size}', 'tmpfs', str(path)],
                                          capture_output=True).returncode != 0:
        pytest.skip('a small tmpfs needs root (mount -t tmpfs)')
    try: yield path
    finally: subprocess.run(['umount', '-l', str(path)], capture_output=True)

def full_disk_line(r, name):
    line = error_line(r.returncode, r.stderr, name)
    assert 'no space left' in line.lower(), line
    return line

def test_full_disk_fetching_photos(tmp_path):
    n = 30  # photos of noise, about 50 kB each: the disk holds two or three
    noise = lambda: Image.frombytes('RGB', (160, 160), os.urandom(160 * 160 * 3))
    routes = {f'/d/{i}.jpg': dict(body=(lambda b: (noise().save(b, 'JPEG', quality=95), b.getvalue())[1])(io.BytesIO()))
              for i in range(n)}
    with PhotoServer(routes) as srv:
        f = write_json(tmp_path/'test_00.json', [photo_record(r, i, f't/d{i}', srv.url(f'/d/{i}.jpg')) for i, r in enumerate(records(n))])
        with small_disk(tmp_path/'disk', '160k') as disk:
            r = run_d2i('data', 'photochat', f, '--out', disk/'photos', '--workers', 2, '--no-progress')
            full_disk_line(r, 'data')
            for p in (disk/'photos').glob('*.jpg'): Image.open(p).load()  # what is there is whole

def test_full_disk_generating(tmp_path):
    f = write_json(tmp_path/'d.json', records(40))
    with small_disk(tmp_path/'disk', '96k') as disk:
        r = run_d2i('generate', '--model', 'tiny-sd', '--dialogs', f, '--out', disk/'gen', '--sample-steps', 1, '--no-progress')
        full_disk_line(r, 'generate')

def test_full_disk_writing_a_dataset(tmp_path):
    with small_disk(tmp_path/'disk', '64k') as disk:
        full_disk_line(run_d2i('data', 'shapeschat', '--n', 400, '--out', disk/'sc'), 'data')
        assert not (disk/'sc'/'dialogs.json').exists()

@pytest.mark.parametrize('size, where', [('12m', 'checkpoint'), ('24m', 'final')])
def test_full_disk_training(size, where, shapes_data, tmp_path):
    "Checkpointing or the final save on a full disk: one line; after the final save fails it names the last checkpoint, "
    "which is whole and loads."
    from safetensors.torch import load_file
    with small_disk(tmp_path/'disk', size) as disk:
        r = run_d2i(*FT[:-3], '--checkpoint-every', 4, '--keep', 1, '--data', shapes_data, '--steps', 4, '--out', disk/'ft')
        line = full_disk_line(r, 'finetune')
        if where == 'final':
            assert 'checkpoint-4' in line and '--resume latest' in line, line
            assert load_file(disk/'ft'/'ckpts'/'checkpoint-4'/'model.safetensors')
        assert not (disk/'ft'/'final').exists()

# === 8: permissions ==================================================================================================

@pytest.mark.parametrize('umask', [0o027, 0o002])
def test_every_file_takes_the_umask(umask, shapes_data, tmp_path):
    "Weights (safetensors), checkpoints, logs, images, photos and records: files 0666 & ~umask, folders 0777 & ~umask."
    kw = dict(preexec_fn=lambda: os.umask(umask))
    r = run_d2i(*FT, '--data', shapes_data, '--steps', 2, '--out', tmp_path/'ft', **kw)
    assert r.returncode == 0, r.stderr
    f = write_json(tmp_path/'d.json', records(2))
    assert run_d2i('generate', '--model', tmp_path/'ft'/'final', '--dialogs', f, '--out', tmp_path/'gen', '--sample-steps', 1,
                   '--no-progress', **kw).returncode == 0
    with PhotoServer({}, fallback=lambda p: dict(body=png(p), type='image/png')) as srv:
        recs = [photo_record(r, i, f't/u{i}', srv.url(f'/u/{i}.png')) for i, r in enumerate(records(2))]
        assert run_d2i('data', 'photochat', write_json(tmp_path/'in'/'test_00.json', recs), '--out', tmp_path/'photos',
                       '--no-progress', **kw).returncode == 0
    wrong = [(str(p.relative_to(tmp_path)), oct(p.stat().st_mode & 0o777)) for d in ('ft', 'gen', 'photos')
             for p in [tmp_path/d, *(tmp_path/d).rglob('*')]
             if p.stat().st_mode & 0o777 != (0o777 if p.is_dir() else 0o666) & ~umask]
    assert not wrong, wrong
