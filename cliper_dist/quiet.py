"""Library messages that say nothing actionable about a cliper-dist run, hidden by default.

Each entry names what it hides and why it is harmless here. The launchers install the
filters at start-up; ``--verbose`` leaves every message in place.
"""

from __future__ import annotations

import logging
import warnings

# (category, message prefix, issuing module pattern, why it is harmless here)
KNOWN_WARNINGS = [
    (UserWarning, "Sparse CSR tensor support is in beta", "",
     "the graphs are CSR tensors on purpose; the kernels they use are stable"),
    (FutureWarning, "Please use DTensor instead", "",
     "torchrec's state dicts are ShardedTensors; DCP reads and writes them"),
    (FutureWarning, "torch.distributed.nn.functional.all_gather is deprecated", "",
     "open_clip's ClipLoss gathers features with it; it is the supported differentiable gather"),
    (DeprecationWarning, "", r"fbgemm_gpu.*",
     "fbgemm-gpu-cpu's CUDA-only modules announce themselves at import"),
]

# logger -> level: torchrec's planner reports on topologies and storage it is never asked to
# plan here (the column_wise plan is given), and its sharding utilities log per table that
# the dense kernel ignores cache settings, which the job never sets.
# torch.fx logs once per process that is_fx_tracing() covers torch.export too: torchrec's modules ask
# it on every forward, and the sequential job never exports.
KNOWN_LOGGERS = {
    "torchrec.distributed.planner": logging.CRITICAL,
    "torchrec.distributed.utils": logging.ERROR,
    "torch.fx._symbolic_trace": logging.ERROR,
}


def hide_known_library_noise() -> None:
    for category, prefix, module, _why in KNOWN_WARNINGS:
        warnings.filterwarnings("ignore", message=prefix, category=category, module=module)
    for name, level in KNOWN_LOGGERS.items():
        logging.getLogger(name).setLevel(level)
