"""Memory of `d2i data photochat` in PhotoChat's own layout (JSON files of 500 dialogs), traced in-process.

    python bench/fetch_memory.py 1000   # one size per process: the peak RSS is the process's

For each size: the bench's records (`bench_data_scale.records`: the bundled PhotoChat records with new ids) written as
`train/train_NN.json` files of 500, served from 127.0.0.1 (`bench_data_scale.serve`), fetched by `d2i_lit.cli.main`
with `tracemalloc` on. Prints the traced Python peak, what stays allocated, and the process's peak RSS (the server and
the bench's own records included): memory that grows with the records shows as a rising traced peak.
"""
import json, resource, sys, tempfile, tracemalloc
from pathlib import Path
sys.path.insert(0, str(Path(__file__).parent))
import bench_data_scale as B
from d2i_lit.cli import main

def measure(n:int, per_file:int=500, workers:int=16)->dict:
    recs, bodies = B.records(n), B.photo_bodies(40)
    with B.serve(recs, bodies):
        d = Path(tempfile.mkdtemp()); src = d/'train'; src.mkdir()
        for k in range(0, n, per_file): (src/f'train_{k//per_file:02d}.json').write_text(json.dumps(recs[k:k + per_file]))
        tracemalloc.start()
        try: main(['data', 'photochat', str(src), '--out', str(d/'photos'), '--workers', str(workers), '--no-progress'])
        except SystemExit: pass
        cur, peak = tracemalloc.get_traced_memory(); tracemalloc.stop()
    return dict(records=n, traced_peak_mib=round(peak / 2**20, 1), traced_after_mib=round(cur / 2**20, 1),
                maxrss_mib=round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024))

if __name__ == '__main__':
    for n in map(int, sys.argv[1:] or ["1000"]): print(json.dumps(measure(n)), flush=True)
