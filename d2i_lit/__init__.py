__version__ = "0.1.0"

import warnings
# fastai 2.8 compiles a few layers with `torch.jit.script` when imported, which torch 2.10+ reports as deprecated on every
# import of d2i_lit's training and data modules; the warning is fastai's to fix, so only that one message is silenced
warnings.filterwarnings('ignore', message=r'`torch\.jit\.script` is deprecated', category=FutureWarning)
