__version__ = "0.1.0"

import os
# OpenMP's default spin-waiting threads collapse when another process takes a core (a training step of seconds instead of
# a fraction of one), and a fully passive wait costs about a quarter of the step on idle cores; a short spin before
# sleeping keeps most of both (bench/bench_threads.py). libgomp reads it when torch loads, and only if the user chose neither
if 'OMP_WAIT_POLICY' not in os.environ and 'GOMP_SPINCOUNT' not in os.environ: os.environ['GOMP_SPINCOUNT'] = '1000'
