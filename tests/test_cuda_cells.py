"""Notebook cells flagged `#| cuda` run here when a GPU exists (the default `nbdev_test` skips them)."""
import subprocess, sys
from pathlib import Path
import pytest, torch

ROOT = Path(__file__).resolve().parents[1]

@pytest.mark.skipif(not torch.cuda.is_available(), reason='no CUDA device: the `#| cuda` cells run only where a GPU exists')
def test_cuda_cells():
    nbs = [p for p in sorted((ROOT/'nbs').glob('*.ipynb')) if '#| cuda' in p.read_text()]
    assert nbs, 'no notebook has a `#| cuda` cell'
    for nb in nbs:
        r = subprocess.run([sys.executable, '-m', 'nbdev.test', '--path', str(nb), '--flags', 'cuda'], cwd=ROOT,
                           capture_output=True, text=True, timeout=1800)
        assert r.returncode == 0, f'{nb.name}:\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}'
