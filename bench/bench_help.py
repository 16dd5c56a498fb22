"""Benchmark: how long `d2i --help` and every `d2i SUBCOMMAND --help` take, each in a fresh process (as a user types it).

    python bench/bench_help.py [--repeats 3] [--target 1.0]

The commands come from the package itself (`d2i_lit.cli.SUBCOMMANDS` and `DATA_CORPORA`), so a new subcommand is timed
without editing this file: `d2i --help`, `d2i data --help`, `d2i data CORPUS --help` for each corpus and
`d2i SUBCOMMAND --help` for the others. Each process runs what the `d2i` console script runs (`d2i_lit.cli.main`) with
this interpreter; runs are interleaved (round r of every command, then round r+1) so a change in the machine's load
touches all of them alike. Prints the median wall time of `--repeats` runs per command, the fastest and slowest, and
whether the median is under the target (1 s); the load average before and after says whether the machine was idle.
A benchmark, not a test: it exits 0 unless a command fails.
"""
import argparse, os, statistics, subprocess, sys, time

RUN_D2I = 'import sys; from d2i_lit.cli import main; sys.exit(main())'  # what the console script `d2i` does

def commands():
    "Every `d2i ... --help` command line, as the argument lists after `d2i`."
    from d2i_lit.cli import DATA_CORPORA, SUBCOMMANDS
    cmds = [['--help']]
    for name in SUBCOMMANDS:
        cmds.append([name, '--help'])
        if name == 'data': cmds += [['data', corpus, '--help'] for corpus in DATA_CORPORA]
    return cmds

def time_once(args):
    "Seconds for one fresh process of `d2i ARGS`; raises if it fails or prints no usage."
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, '-c', RUN_D2I, *args], capture_output=True, text=True)
    secs = time.perf_counter() - t0
    if r.returncode != 0 or 'usage' not in r.stdout.lower():
        raise SystemExit(f"d2i {' '.join(args)} failed (exit {r.returncode}): {(r.stderr or r.stdout).strip()[-500:]}")
    return secs

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--repeats', type=int, default=3, help='fresh processes per command; the median is reported')
    ap.add_argument('--target', type=float, default=1.0, help='seconds a `--help` should take at most')
    args = ap.parse_args()
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    cmds = commands()
    load0 = os.getloadavg()
    times = {tuple(c): [] for c in cmds}
    for _ in range(args.repeats):
        for c in cmds: times[tuple(c)].append(time_once(c))
    load1 = os.getloadavg()
    width = max(len(' '.join(c)) for c in cmds) + 4
    print(f"{'command':<{width}} {'median s':>9} {'min s':>7} {'max s':>7}  under {args.target:g} s")
    for c, ts in times.items():
        med = statistics.median(ts)
        print(f"{'d2i ' + ' '.join(c):<{width}} {med:>9.2f} {min(ts):>7.2f} {max(ts):>7.2f}  {'yes' if med < args.target else 'NO'}")
    slow = sum(statistics.median(ts) >= args.target for ts in times.values())
    print(f'{len(cmds) - slow} of {len(cmds)} under {args.target:g} s; {args.repeats} runs each; '
          f'load average {load0[0]:.2f} before, {load1[0]:.2f} after ({os.cpu_count()} CPUs); python {sys.version.split()[0]}')

if __name__ == '__main__': main()
