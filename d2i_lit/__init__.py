__version__ = "0.1.0"

import os, warnings
# OpenMP's default spin-waiting threads collapse when another process takes a core (a training step of seconds instead of
# a fraction of one, bench/bench_threads.py); wait passively unless the user chose, before torch loads OpenMP
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
# fastai 2.8 compiles a few layers with `torch.jit.script` when imported, which torch 2.10+ reports as deprecated on every
# import of d2i_lit's training and data modules; the warning is fastai's to fix, so only that one message is silenced
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
