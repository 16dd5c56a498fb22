"""`pip install d2i_lit`: the wheel installs in a fresh venv, imports, runs `d2i --help` and carries its package data."""
import os, site, subprocess, sys, sysconfig, venv
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]

@pytest.fixture(scope='module')
def wheel(tmp_path_factory):
    out = tmp_path_factory.mktemp('dist')
    r = subprocess.run([sys.executable, '-m', 'pip', 'wheel', '--no-deps', '--no-build-isolation', '-w', str(out), str(ROOT)],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    (whl,) = out.glob('d2i_lit-*.whl')
    return whl

def test_wheel_in_fresh_venv(wheel, tmp_path):
    env_dir = tmp_path/'venv'
    venv.create(env_dir, with_pip=True)
    py = env_dir/'bin'/'python'
    # the wheel itself goes in with --no-deps; its (large) dependencies come from this interpreter's site-packages
    r = subprocess.run([py, '-m', 'pip', 'install', '--no-deps', '-q', str(wheel)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    purelib = subprocess.run([py, '-c', 'import sysconfig; print(sysconfig.get_paths()["purelib"])'], capture_output=True, text=True).stdout.strip()
    Path(purelib, '_deps.pth').write_text(sysconfig.get_paths()['purelib'] + '\n')
    env = {k: v for k, v in os.environ.items() if k not in ('PYTHONPATH',)}
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
