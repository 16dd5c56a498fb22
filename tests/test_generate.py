"`d2i generate` as a process: the CLI on the bundled sample (tiny tier), resume after SIGKILL, and 2 CPU processes under accelerate."
import json, os, signal, subprocess, sys, time
from pathlib import Path
import numpy as np, pytest
from PIL import Image

ENV = {**os.environ, 'HF_HUB_OFFLINE': '1', 'D2I_THREADS': '1', 'OMP_NUM_THREADS': '1', 'PYTHONUNBUFFERED': '1'}
ARGS = ['--model', 'tiny-sd', '--style', 'hash', '--sample-steps', '3', '--guidance', '7.5', '--seed', '0', '--scheduler', 'ddim', '--batch-size', '2']
N = 8

def d2i(*args, **kw): return [sys.executable, '-m', 'd2i_lit.cli', 'generate', *args]

def manifest(out): return [json.loads(l) for l in (Path(out)/'manifest.jsonl').read_text().splitlines()]

def pixels(out): return {r['id']: np.asarray(Image.open(Path(out)/r['file'])) for r in manifest(out)}

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "An uninterrupted single-process run on the first N dialogs of the bundled sample."
    out = tmp_path_factory.mktemp('ref')/'out'
    r = subprocess.run(d2i(*ARGS, '--limit', str(N), '--out', str(out)), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    return out

def test_cli_on_sample(reference):
    recs = manifest(reference)
    from d2i_lit.data import load_sample
    assert [r['id'] for r in recs] == [d.dialogue_id for d in load_sample()[:N]]
    assert set(recs[0]) == {'id', 'style', 'seed', 'prompt', 'file'} and recs[0]['prompt'].startswith('#')
    assert all(Image.open(reference/r['file']).size == (64, 64) for r in recs)
    assert not list(reference.glob('manifest.rank*')) and json.loads((reference/'run.json').read_text())['sample_steps'] == 3

def test_cli_errors_are_one_line(tmp_path):
    r = subprocess.run(d2i('--dialogs', str(tmp_path/'nope.json'), '--out', str(tmp_path/'o')), env=ENV, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and r.stderr.strip().count('\n') == 0 and 'nope.json' in r.stderr

def test_resume_after_sigkill(reference, tmp_path):
    out = tmp_path/'out'
    p = subprocess.Popen(d2i(*ARGS, '--limit', str(N), '--out', str(out)), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    part, t0 = out/'manifest.rank0.jsonl', time.time()
    while p.poll() is None and time.time() - t0 < 240:
        if part.exists() and len(part.read_text().splitlines()) >= 2: break  # at least one batch finished
        time.sleep(0.05)
    assert p.poll() is None, 'the run finished before it could be killed: make it longer'
    p.send_signal(signal.SIGKILL); p.wait()
    done = [json.loads(l) for l in part.read_text().splitlines() if l.endswith('}')]
    assert 2 <= len(done) < N
    stamps = {r['file']: (out/r['file']).stat().st_mtime_ns for r in done}
    r = subprocess.run(d2i(*ARGS, '--limit', str(N), '--out', str(out)), env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert {f: (out/f).stat().st_mtime_ns for f in stamps} == stamps  # finished images were not redone
    assert manifest(out) == manifest(reference)
    a, b = pixels(out), pixels(reference)
    assert all(np.array_equal(a[k], b[k]) for k in b)

def test_two_cpu_processes_with_accelerate(reference, tmp_path):
    out = tmp_path/'out'
    cmd = [sys.executable, '-m', 'accelerate.commands.launch', '--num_processes', '2', '--num_machines', '1', '--cpu',
           '--mixed_precision', 'no', '--dynamo_backend', 'no', '--main_process_port', '29517',
           '-m', 'd2i_lit.cli', 'generate', *ARGS, '--limit', str(N), '--out', str(out)]
    r = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert not list(out.glob('manifest.rank*'))  # one merged manifest
    assert manifest(out) == manifest(reference)
    a, b = pixels(out), pixels(reference)
    assert all(np.array_equal(a[k], b[k]) for k in b)
