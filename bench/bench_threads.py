"""Training-step time of the ShapesChat model when another process competes for a core: OpenMP's wait policy and thread count.

    python bench/bench_threads.py [--steps 12 --bs 64]

Each configuration runs in a fresh process, because OpenMP reads its wait policy once, when the library loads.
Configurations: torch's default spinning wait (`OMP_WAIT_POLICY` unset, as before d2i_lit set it) against the passive wait
that `d2i_lit` now sets on import, each with 2 threads and 1 thread; each idle and beside one busy process (a Python spin
loop, the "one core busy with another process" of issue 13). Prints the median step time of each and the ratio against
the spinning 2-thread baseline run in the same conditions.
"""
import argparse, os, subprocess, sys, textwrap, time

CHILD = textwrap.dedent('''
    import os, statistics, sys, time
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
    env = {k:v for k,v in os.environ.items() if k not in ('OMP_WAIT_POLICY', 'OMP_NUM_THREADS', 'D2I_THREADS')}
    env['BENCH_THREADS'] = str(threads)
    # d2i_lit sets PASSIVE with setdefault on import; ACTIVE here restores the spinning default for the baseline
    env['OMP_WAIT_POLICY'] = policy
    out = subprocess.run([sys.executable, '-c', CHILD, str(steps), str(bs)], env=env, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])

if __name__ == '__main__':
    ap = argparse.ArgumentParser()
    ap.add_argument('--steps', type=int, default=12); ap.add_argument('--bs', type=int, default=64)
    a = ap.parse_args()
    configs = [('ACTIVE', 2), ('PASSIVE', 2), ('ACTIVE', 1), ('PASSIVE', 1)]
    print(f'shapes tier training step, batch {a.bs}, median of {a.steps} steps; {os.cpu_count()} cores')
    for busy in (False, True):
        hog = subprocess.Popen([sys.executable, '-c', 'while True: pass']) if busy else None
        try:
            time.sleep(0.5 if busy else 0)
            res = {c: run(*c, a.steps, a.bs) for c in configs}
        finally:
            if hog: hog.kill(); hog.wait()
        base = res[('ACTIVE', 2)]
        print(f"\n{'one core busy with another process' if busy else 'no competing process'}:")
        for (pol, th), s in res.items():
            print(f'  {"spinning (torch default)" if pol == "ACTIVE" else "passive (d2i_lit default)":<27} {th} thread(s): '
                  f'{s*1e3:8.1f} ms/step   ratio vs spinning 2 threads: {s/base:.2f}')
