"""Benchmark: linearize and tokenize 12,000 PhotoChat dialogs (the bundled 207-dialog sample repeated) with the real
CLIP tokenizer, under CLIP's 77-position budget.

    python bench/bench_linearize.py [--n 12000] [--style hash] [--threads 2] [--repeats 3]

Measured: `linearize_tokens` (each dialog's whole text tokenized once, in one batch call of the fast Rust tokenizer,
the kept turns found from the token offsets) and the padded ids a text encoder receives ([BOS] ids [EOS] pad to 77),
built from the ids it returns.
Baseline, run side by side in the same process on the same dialogs: the per-dialog loop: for each dialog, drop the
oldest turn and re-tokenize the whole text until it fits, then encode it, one tokenizer call at a time. Both must give
identical ids. Prints dialogs/second, total seconds and the speed-up; the target is under 2 s for the batched path.
"""
import argparse, os, sys, time

def main():
    ap = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    ap.add_argument('--n', type=int, default=12_000, help='dialogs (the sample repeated)')
    ap.add_argument('--style', default='hash')
    ap.add_argument('--threads', type=int, default=2, help='threads for the Rust tokenizer and torch (this machine has 2 cores)')
    ap.add_argument('--repeats', type=int, default=3, help='timed runs of each method; the best is reported')
    args = ap.parse_args()
    # pin threads before tokenizers (Rayon) and torch start their pools
    os.environ['RAYON_NUM_THREADS'] = os.environ['RAYON_RS_NUM_CPUS'] = str(args.threads)
    os.environ['TOKENIZERS_PARALLELISM'] = 'true' if args.threads > 1 else 'false'
    os.environ.setdefault('HF_HUB_OFFLINE', '1')
    from d2i_lit.core import set_threads
    from transformers.utils import logging; logging.set_verbosity_error()  # the baseline's over-long texts warn
    from d2i_lit.data import load_sample
    from d2i_lit.linearize import clip_tokenizer, linearize_tokens, turn_pieces
    set_threads(args.threads)

    t0 = time.perf_counter(); tok = clip_tokenizer(); t_build = time.perf_counter() - t0
    sample = load_sample()
    dialogs = (sample * (args.n // len(sample) + 1))[:args.n]
    budget = 77 - tok.num_special_tokens_to_add()

    def batched():
        res, ids = linearize_tokens(dialogs, args.style, tok, budget)  # the budget counts text tokens, BOS/EOS aside
        bos, eos, pad = tok.bos_token_id, tok.eos_token_id, tok.pad_token_id
        return [[bos] + i + [eos] + [pad] * (75 - len(i)) for i in ids]

    def per_dialog():
        out = []
        for d in dialogs:
            ps = turn_pieces(d, args.style)
            for k in range(len(ps)):
                text = ' '.join(ps[k:])
                if len(tok(text, add_special_tokens=False)['input_ids']) <= budget: break
            else: text = None
            if text is None: return None  # the loop cannot cut inside a turn; the sample never needs it at 77 for hash
            out.append(tok(text, padding='max_length', max_length=77, truncation=True)['input_ids'])
        return out

    def best(fn):
        "Best wall and CPU seconds of `args.repeats` runs (CPU time: the machine is shared, wall time includes waiting)."
        ws, cs, res = [], [], None
        for _ in range(args.repeats):
            w, c = time.perf_counter(), time.process_time(); res = fn()
            ws.append(time.perf_counter() - w); cs.append(time.process_time() - c)
        return min(ws), min(cs), res

    t_b, c_b, ids_b = best(batched)
    t_l, c_l, ids_l = best(per_dialog)
    same = ids_l is not None and ids_b == ids_l
    print(f'CLIP tokenizer built offline in {t_build*1000:.0f} ms; {args.n} dialogs, style {args.style!r}, '
          f'budget {budget} text tokens (77 positions), threads {args.threads}, best of {args.repeats}')
    print(f'batched (linearize_tokens, one batch call): {t_b:.3f} s wall, {c_b:.3f} s CPU, {args.n/t_b:,.0f} dialogs/s (wall)')
    print(f'baseline (per-dialog loop, one call at a time): {t_l:.3f} s wall, {c_l:.3f} s CPU, {args.n/t_l:,.0f} dialogs/s (wall)')
    print(f'speed-up: {t_l/t_b:.1f}x wall, {c_l/c_b:.1f}x CPU; identical ids: {same}; '
          f'target < 2 s: {"met" if t_b < 2 else "missed"} (wall), {"met" if c_b < 2 else "missed"} (CPU)')
    return 0 if same else 1

if __name__ == '__main__': sys.exit(main())
