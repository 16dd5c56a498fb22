"""Training-step time of the ShapesChat model when another process competes for a core: OpenMP's wait policy and thread count.

    python bench/bench_threads.py [--steps 12 --bs 64 --repeats 3]

Each configuration runs in a fresh process, because OpenMP reads its wait policy once, when the library loads.
Configurations: OpenMP's default wait (`OMP_WAIT_POLICY` unset: libgomp spins 300,000 times, then sleeps; what torch
does unless told), a passive wait (`OMP_WAIT_POLICY=PASSIVE`: sleep at once), and the short spin that `import d2i_lit`
sets when the user chose neither (`GOMP_SPINCOUNT=1000`), with 2 threads, and the default with 1 thread; each idle and beside one busy process (a Python spin loop, the "one core
busy with another process" of issue 13). Prints the median step time of each and the ratio against the default
2-thread run in the same conditions.
"""
import argparse, os, statistics, subprocess, sys, textwrap, time

CHILD = textwrap.dedent('''
    import os, statistics, sys, time
    import d2i_lit   # first, as users import it: its OpenMP setting must precede torch's loading of libgomp
    import torch
    from d2i_lit.core import set_seed, set_threads
    from d2i_lit.backbones import shapes_backbone
    from d2i_lit.finetune import freeze_frozen_parts, diffusion_loss
    steps, bs = int(sys.argv[1]), int(sys.argv[2])
    set_threads(int(os.environ['BENCH_THREADS'])); set_seed(0)
    bb = shapes_backbone(); freeze_frozen_parts(bb)
    net, sched = bb.noise_predictor, bb.noise_scheduler
    opt = torch.optim.AdamW([p for p in net.parameters() if p.requires_grad], lr=1e-4)
    x = torch.rand(bs, 3, bb.resolution, bb.resolution)*2 - 1
    ids = bb.tokenize(['# a red circle # the blue square is mine'] * bs)
    times = []
    for i in range(steps + 2):
        t0 = time.perf_counter()
        with torch.no_grad(): emb = bb.encode_text(ids); x0 = bb.encode_images(x)
        t = torch.randint(0, 1000, (bs,)); noise = torch.randn_like(x0)
        loss = diffusion_loss(bb.predict(sched.add_noise(x0, noise, t), t, emb), x0, torch.ones(bs))
        loss.backward(); opt.step(); opt.zero_grad()
        if i >= 2: times.append(time.perf_counter() - t0)   # two warm-up steps
    print(statistics.median(times))
''')

def run(policy, threads, steps, bs):
    env = {k:v for k,v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'GOMP_SPINCOUNT', 'OMP_NUM_THREADS', 'D2I_THREADS')}
    env['BENCH_THREADS'] = str(threads)
    # d2i_lit sets its spin count only where neither variable is set; an empty OMP_WAIT_POLICY is libgomp's "unset"
    if policy != 'd2i_lit': env['OMP_WAIT_POLICY'] = policy if policy in ('PASSIVE', 'ACTIVE') else ''
    out = subprocess.run([sys.executable, '-c', CHILD, str(steps), str(bs)], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=12); ap.add_argument('--bs', type=int, default=64)
    ap.add_argument('--repeats', type=int, default=3, help='fresh processes per configuration, interleaved; the median is shown')
    a = ap.parse_args()
    configs = [('default', 2), ('PASSIVE', 2), ('d2i_lit', 2), ('default', 1)]
    print(f'shapes tier training step, batch {a.bs}, median of {a.steps} steps, median of {a.repeats} processes; {os.cpu_count()} cores')
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, '-c', 'while True: pass']) if busy else None
        try:
            time.sleep(0.5 if busy else 0)
            # interleaved repeats: one process's median still varies by ~20% with the machine's state
            runs = [{c: run(*c, a.steps, a.bs) for c in configs} for _ in range(a.repeats)]
            res = {c: statistics.median(r[c] for r in runs) for c in configs}
        finally:
            if hog: hog.kill(); hog.wait()
        base = res[('default', 2)]
        print(f"\n{'one core busy with another process' if busy else 'no competing process'}:")
        for (pol, th), s in res.items():
            name = dict(default='OpenMP default (unset)', PASSIVE='passive (OMP_WAIT_POLICY)', d2i_lit='d2i_lit (GOMP_SPINCOUNT=1000)')[pol]
            print(f'  {name:<30} {th} thread(s): {s*1e3:8.1f} ms/step   ratio vs default 2 threads: {s/base:.2f}')
