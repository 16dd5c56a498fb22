"""`pip install d2i_lit`: the wheel installs in a fresh venv, imports, runs `d2i --help` and carries its package data."""
import os, re, shutil, site, subprocess, sys, sysconfig, venv
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def source(tmp_path_factory):
    "The repository's files (tracked, and new ones git does not ignore) in a temp folder: building writes `build/` and `*.egg-info`."
    src = tmp_path_factory.mktemp('src')
    files = subprocess.run(['git', 'ls-files', '-co', '--exclude-standard', '-z'], cwd=ROOT, capture_output=True, text=True, check=True).stdout
    for f in filter(None, files.split('\0')):
        if (ROOT/f).is_file(): (src/f).parent.mkdir(parents=True, exist_ok=True); shutil.copy2(ROOT/f, src/f)
    return src

@pytest.fixture(scope='module')
def wheel(source, tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', str(out), str(source)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = out.glob('d2i_lit-*.whl')
    return whl

def test_wheel_in_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir/'bin'/'python'
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH',)}  # a checkout on the path would shadow the wheel
    # the wheel itself goes in with --no-deps; its (large) dependencies come from this interpreter's site-packages
    r = subprocess.run([py, '-m', 'pip', 'install', '--no-deps', '-q', str(wheel)], capture_output=True, text=True, timeout=300, env=env)
    assert r.returncode == 0, r.stderr[-2000:]
    purelib = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True).stdout.strip()
    Path(purelib, '_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    code = ("import d2i_lit, d2i_lit.core as c, pathlib; print(d2i_lit.__file__); "
            "print('\\n'.join(sorted(p.name for p in c.ASSETS.iterdir())))")
    r = subprocess.run([py, '-c', code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0, r.stderr[-2000:]
    first, *assets = r.stdout.split()
    assert Path(first).is_relative_to(env_dir), f'd2i_lit imported from {first}, not from the fresh venv'
    shipped = sorted(p.name for p in (ROOT/'d2i_lit'/'assets').iterdir() if not p.name.startswith('.'))
    assert assets == shipped
    r = subprocess.run([env_dir/'bin'/'d2i', '--help'], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and 'subcommands:' in r.stdout, r.stderr
    r = subprocess.run([env_dir/'bin'/'d2i', 'linearize', '--style', 'hash'], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert r.returncode == 0 and r.stdout.count('\n') == 207, r.stderr[-2000:]

def _metadata(wheel):
    "The wheel's METADATA as a message, and its requirements parsed: (base, {extra: [requirements]})."
    import email, zipfile
    from packaging.requirements import Requirement
    with zipfile.ZipFile(wheel) as z:
        meta = email.message_from_bytes(z.read(next(n for n in z.namelist() if n.endswith('.dist-info/METADATA'))))
    base, extras = [], {e: [] for e in meta.get_all('Provides-Extra') or []}
    for line in meta.get_all('Requires-Dist') or []:
        req = Requirement(line)
        extra = re.search(r'extra\s*==\s*"([^"]+)"', str(req.marker)) if req.marker else None
        (extras[extra.group(1)] if extra else base).append(req)
    return meta, base, extras

def test_license_in_wheel_and_sdist(source, wheel, tmp_path):
    "The Apache-2.0 text settings.ini names ships in the repo, the wheel and the sdist, and the metadata says Apache-2.0."
    import tarfile, zipfile
    text = (ROOT/'LICENSE').read_text()
    assert 'Apache License' in text and 'Version 2.0, January 2004' in text and 'END OF TERMS AND CONDITIONS' in text
    with zipfile.ZipFile(wheel) as z:
        lic = [n for n in z.namelist() if n.endswith('/LICENSE')]
        assert lic and z.read(lic[0]).decode() == text, z.namelist()
    meta, _, _ = _metadata(wheel)
    assert 'Apache-2.0' in (meta.get('License-Expression') or meta.get('License') or ''), dict(meta)
    r = subprocess.run([sys.executable, '-m', 'build', '--sdist', '--no-isolation', '-o', str(tmp_path), str(source)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (sdist,) = tmp_path.glob('d2i_lit-*.tar.gz')
    with tarfile.open(sdist) as t:
        member = next(m for m in t.getmembers() if m.name.count('/') == 1 and m.name.endswith('/LICENSE'))
        assert t.extractfile(member).read().decode() == text

def test_requirements_and_extras(wheel):
    "Ranges rather than exact pins; optional pieces as extras; `[dev]` pulls in every extra and the notebook test's kernel."
    _, base, extras = _metadata(wheel)
    names = {r.name.lower(): r for r in base}
    pinned = [str(r) for r in base if any(s.operator in ('==', '===') for s in r.specifier)]
    assert not pinned, f'exact pins in the install requirements: {pinned}'
    assert 'filelock' in names  # the run lock (portable, no fcntl)
    assert names['fastai'].specifier.contains('2.8.7') and not names['fastai'].specifier.contains('2.8.8')  # 2.8.8+ needs fastcore 2
    assert 'torch-fidelity' not in names, 'torch-fidelity is needed only by --inception-weights: it belongs in [metrics]'
    want = {'metrics': 'torch-fidelity', 'app': 'gradio', 'tensorboard': 'tensorboard', 'datasets': 'datasets'}
    for extra, pkg in want.items(): assert pkg in {r.name.lower() for r in extras.get(extra, [])}, (extra, extras.get(extra))
    dev = {r.name.lower() for r in extras['dev']}
    missing = {r.name.lower() for e in want for r in extras[e]} - dev
    assert not missing, f'[dev] lacks the extras {missing}'
    assert {'nbclient', 'ipykernel', 'pytest', 'nbdev', 'smalldocs'} <= dev, dev

def test_metrics_without_torch_fidelity(tmp_path):
    "In a venv without torch-fidelity, `import d2i_lit.metrics` works and only the Inception path refuses, in one line."
    env_dir, deps = tmp_path/'venv', tmp_path/'site'
    venv.create(env_dir)
    deps.mkdir()  # this interpreter's packages, less torch-fidelity (module and metadata)
    for p in Path(sysconfig.get_paths()['purelib']).iterdir():
        if not p.name.lower().startswith(('torch_fidelity', 'torch-fidelity')): (deps/p.name).symlink_to(p)
    py = env_dir/'bin'/'python'
    purelib = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True).stdout.strip()
    Path(purelib, '_deps.pth').write_text(f'{deps}\n')
    code = ("import importlib.util, sys\n"
            "assert importlib.util.find_spec('torch_fidelity') is None\n"
            "import d2i_lit.metrics as m\n"
            "from d2i_lit.core import D2IError\n"
            "p = sys.argv[1]; open(p, 'wb').write(b'x')\n"
            "try: m.InceptionFeatureNet(p)\n"
            "except D2IError as e: print('ERR', e)\n")
    r = subprocess.run([py, '-c', code, str(tmp_path/'w.pth')], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
    err = [l for l in r.stdout.splitlines() if l.startswith('ERR')]
    assert len(err) == 1 and 'torch-fidelity' in err[0], r.stdout

def test_import_leaves_warning_filters_alone(tmp_path):
    "Importing every d2i_lit module adds no warning filter of its own (the libraries it imports may add theirs)."
    import ast
    pkg = Path(__file__).resolve().parents[1]/'d2i_lit'
    mods = sorted(f.stem for f in pkg.glob('*.py') if not f.stem.startswith('_'))
    third = set()
    for f in pkg.glob('*.py'):
        for n in ast.walk(ast.parse(f.read_text())):
            if isinstance(n, ast.ImportFrom) and n.level == 0 and n.module and not n.module.startswith('d2i_lit'): third.add(n.module)
            if isinstance(n, ast.Import): third |= {a.name for a in n.names if not a.name.startswith('d2i_lit')}
    code = ("import importlib, warnings\n"
            f"for m in {sorted(third)!r}:\n"
            "    try: importlib.import_module(m)\n"
            "    except ImportError: pass\n" # an optional extra (gradio, tensorboard, datasets) not installed
            "before = list(warnings.filters)\n"
            f"for m in {mods!r}: importlib.import_module('d2i_lit.' + m)\n"
            "added = [f for f in warnings.filters if f not in before]\n"
            "assert not added, added\n")
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, cwd=tmp_path,
                       env={**os.environ, 'HF_HUB_OFFLINE': '1'})
    assert r.returncode == 0, r.stderr[-2000:]
