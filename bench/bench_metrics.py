"""Time FID/IS with the ShapesChat classifier, side by side with torchmetrics' FrechetInceptionDistance on the same features.

    python bench/bench_metrics.py [N]
"""
import sys, time
import numpy as np, torch
from d2i_lit.core import set_threads
from d2i_lit.shapeschat import ATTRIBUTES, render_object
from d2i_lit.metrics import ClassifierFeatureNet, image_features, frechet_distance, inception_score_from_probs, fid_from_features
from torchmetrics.image.fid import FrechetInceptionDistance

set_threads(1)
N = int(sys.argv[1]) if len(sys.argv) > 1 else 2000
def rendered(n, seed):
    r = np.random.default_rng(seed)
    return [render_object({k: v[r.integers(len(v))] for k, v in ATTRIBUTES.items()}, size=16, seed=int(r.integers(2**31))) for _ in range(n)]
t = time.perf_counter(); real, fake = rendered(N, 0), rendered(N, 1); t_render = time.perf_counter() - t
net = ClassifierFeatureNet()
t = time.perf_counter(); rs, _ = image_features(real, net, keep_probs=False); fs, probs = image_features(fake, net); t_feat = time.perf_counter() - t
t = time.perf_counter(); fid = frechet_distance(rs.mean, rs.cov, fs.mean, fs.cov); is_ = inception_score_from_probs(probs); t_stat = time.perf_counter() - t

class Net(torch.nn.Module):
    num_features = 64
    def forward(self, x): return torch.from_numpy(net(x)[0])
tm = FrechetInceptionDistance(feature=Net())
from d2i_lit.metrics import image_batches
t = time.perf_counter()
for items, real_ in ((real, True), (fake, False)):
    for x in image_batches(items, 16): tm.update(x, real=real_)
fid_tm = float(tm.compute()); t_tm = time.perf_counter() - t
print(f'N={N} real + {N} generated, 16 px, {net.name}, 1 thread')
print(f'render {t_render:.2f} s; features (both sets) {t_feat:.2f} s ({2*N/t_feat:.0f} img/s); Frechet distance + IS {t_stat*1e3:.1f} ms')
print(f'FID {fid:.4f} (torchmetrics on the same features {fid_tm:.4f}, {t_tm:.2f} s end to end vs ours {t_feat + t_stat:.2f} s); IS {is_[0]:.3f} ± {is_[1]:.3f}')
