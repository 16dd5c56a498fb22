"`09c_study` as a reader runs it: in a real Jupyter kernel, in a fresh clone, with no runs folder named — it reads the committed study records and leaves every tracked file as it was (it once replaced them with an empty file)."
import os, subprocess, sys
from pathlib import Path
import pytest

nbclient = pytest.importorskip('nbclient')
nbformat = pytest.importorskip('nbformat')
REPO = Path(__file__).resolve().parents[1]

def test_09c_runs_in_a_kernel_and_leaves_the_clone_clean(tmp_path):
    clone = tmp_path/'clone'
    subprocess.run(['git', 'clone', '-q', str(REPO), str(clone)], check=True)
    env = {k: v for k, v in os.environ.items() if k != 'D2I_STUDY_RUNS'}
    env.update(PYTHONPATH=str(clone), HF_HUB_OFFLINE='1', D2I_THREADS='1', OMP_NUM_THREADS='1')
    nb = nbformat.read(clone/'nbs'/'09c_study.ipynb', as_version=4)
    old = dict(os.environ)
    try:
        os.environ.clear(); os.environ.update(env) # the kernel inherits this process's environment
        nbclient.NotebookClient(nb, timeout=600, kernel_name='python3', resources={'metadata': {'path': str(clone/'nbs')}}).execute()
    finally:
        os.environ.clear(); os.environ.update(old)
    out = ''.join(o.get('text', '') for c in nb.cells if c.cell_type == 'code' for o in c.get('outputs', []))
    assert 'reading the committed records' in out
    assert subprocess.run(['git', 'status', '--porcelain'], cwd=clone, capture_output=True, text=True).stdout == ''
