"""One dense, single-process reference per model: its equations as MMRec computes them.

Each module here writes one model's forward and loss the way MMRec's ``src/models/*.py``
does, in plain torch: whole tables, ``torch.sparse.mm`` over the full normalised adjacency
for every batch, every item projected every step, LATTICE's dense I x I graph learning.
No column split, no workspace, no custom backward: what the column-parallel model in
``cliper_dist/model/<name>.py`` must equal, and what it is timed against.

Two users, one source of each model's equations:

- ``tests/model/test_parity.py`` builds a reference in float64 from the engine's initial
  parameters (a reference's state dict holds exactly the model's parameters, by name and
  whole shape), takes the engine's batches, steps Adam written out, and compares losses,
  parameters, embeddings and metrics at 1 to 4 ranks;
- ``benchmarks/train_epoch.py`` trains a reference in float32 as the MMRec-style speed
  baseline. What makes that run MMRec-style, besides the per-step computation above: Adam
  (``torch.optim.Adam``) steps every parameter densely every step, and the negatives come
  from MMRec's Python sampler, one redrawn random item per positive.

What a reference shares with the model it checks is only what must be drawn identically
for two runs to be compared: FREEDOM's pruned graph and DualGNN's user graph come from the
same (seed, epoch) streams and functions as the model's (MMRec draws them with
``torch.multinomial`` and a Python loop); those functions have tests of their own. A
reference lives in the package, not in ``tests/``, so that the benchmark can import it
without a test dependency.
"""

from __future__ import annotations

from cliper_dist.model.reference.base import Reference
from cliper_dist.model.reference.dualgnn import DualGNN
from cliper_dist.model.reference.freedom import FREEDOM
from cliper_dist.model.reference.lattice import LATTICE
from cliper_dist.model.reference.lightgcn import LightGCN
from cliper_dist.model.reference.mmgcn import MMGCN
from cliper_dist.model.reference.slmrec import SLMRec
from cliper_dist.model.reference.vbpr import VBPR

REFERENCES: dict[str, type[Reference]] = {"lightgcn": LightGCN, "freedom": FREEDOM, "vbpr": VBPR, "slmrec": SLMRec,
                                          "lattice": LATTICE, "dualgnn": DualGNN, "mmgcn": MMGCN}
