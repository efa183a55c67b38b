"""CPU against CUDA: when two runs of the same job on the two devices agree, with the tolerances stated.

Used by tests/e2e/test_gpu.py and scripts/gpu_check.sh (``python -m cliper_dist.testing.devices
train RUN_A RUN_B`` or ``arrays DIR_A DIR_B``: one JSON line, exit 1 when they disagree).

Why a tolerance and not equality: the two devices add in different orders. CUDA's
``index_add_`` and sparse products use atomics and their own reduction trees, so even two
CUDA runs differ in the last bits; TF32 is off for matrix products (torch's default) but the
CLIP's patch convolution may use it (cuDNN's default), and ``topk`` breaks ties by its own
rule. Float32 differences of ~1e-6 per step grow over a few epochs of Adam to ~1e-4 of the
loss, and a ranking metric moves only when items near the cut-off swap places.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

from cliper_dist import files

LOSS_RTOL = 1e-3  # per-epoch training loss: |a - b| <= LOSS_RTOL * max(1, |b|)
METRIC_ATOL = 0.02  # Recall@K and NDCG@K (valid and test, every K): |a - b| <= METRIC_ATOL
ARRAY_COSINE_MIN = 0.999  # float32 outputs (encode at fp32, adapt): cosine of each row pair
BF16_COSINE_MIN = 0.99  # a bf16 encode against the fp32 one


def compare_train_runs(a: str | Path, b: str | Path) -> dict:
    """``a`` and ``b``: run directories of the same config; every evaluated epoch is compared."""
    ra, rb = (list(files.read_jsonl(Path(run) / "metrics.jsonl")) for run in (a, b))
    problems = [] if ra else ["no evaluated epoch"]
    if [r["epoch"] for r in ra] != [r["epoch"] for r in rb]:
        problems.append(f"evaluated epochs differ: {[r['epoch'] for r in ra]} vs {[r['epoch'] for r in rb]}")
    loss_rel = metric_abs = 0.0
    for x, y in zip(ra, rb):
        rel = abs(x["loss"] - y["loss"]) / max(1.0, abs(y["loss"]))
        loss_rel = max(loss_rel, rel)
        if rel > LOSS_RTOL:
            problems.append(f"epoch {x['epoch']}: loss {x['loss']} vs {y['loss']} (relative {rel:.2g} > {LOSS_RTOL})")
        for split in ("valid", "test"):
            for name, value in x[split].items():
                diff = abs(value - y[split][name])
                metric_abs = max(metric_abs, diff)
                if diff > METRIC_ATOL:
                    problems.append(f"epoch {x['epoch']}: {split} {name} {value:.4f} vs {y[split][name]:.4f} "
                                    f"(|diff| {diff:.3g} > {METRIC_ATOL})")
    return {"what": "train", "a": str(a), "b": str(b), "epochs": len(ra), "max_loss_rel": loss_rel,
            "max_metric_abs": metric_abs, "loss_rtol": LOSS_RTOL, "metric_atol": METRIC_ATOL,
            "agree": not problems, "problems": problems[:10]}


def row_cosines(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    a = np.asarray(a, dtype=np.float64).reshape(-1, np.shape(a)[-1])
    b = np.asarray(b, dtype=np.float64).reshape(-1, np.shape(b)[-1])
    norms = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    return np.where(norms > 0, (a * b).sum(axis=1) / np.maximum(norms, 1e-300), 1.0)


def compare_arrays(a: str | Path, b: str | Path, names: list[str] | None = None,
                   cosine_min: float = ARRAY_COSINE_MIN) -> dict:
    """Every ``.npy`` both directories hold (or ``names``), row by row (last axis = a vector)."""
    names = names or sorted(p.name for p in Path(a).glob("*.npy") if (Path(b) / p.name).is_file())
    problems, worst = [], {}
    for name in names:
        x, y = np.load(Path(a) / name), np.load(Path(b) / name)
        if x.shape != y.shape:
            problems.append(f"{name}: shape {x.shape} vs {y.shape}")
            continue
        if not np.issubdtype(x.dtype, np.floating):
            continue
        low = float(row_cosines(x, y).min()) if x.size else 1.0
        worst[name] = round(low, 6)
        if low < cosine_min:
            problems.append(f"{name}: a row pair has cosine {low:.5f} < {cosine_min}")
    return {"what": "arrays", "a": str(a), "b": str(b), "min_cosine": worst, "cosine_min": cosine_min,
            "agree": bool(worst) and not problems, "problems": problems[:10] or ([] if worst else ["no arrays"])}


def main(argv: list[str]) -> int:
    kind, a, b, *rest = argv
    report = compare_train_runs(a, b) if kind == "train" else compare_arrays(
        a, b, cosine_min=float(rest[0]) if rest else ARRAY_COSINE_MIN)
    print(json.dumps(report))
    return 0 if report["agree"] else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
