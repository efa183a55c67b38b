"""Train a registered recommender on torchrec-sharded ID tables, with full-ranking evaluation.

    torchrun --nproc_per_node 2 launch/train.py --config configs/train/freedom.yaml \
        --data DATASET_DIR --features FEATURES_DIR --out RUN_DIR [model.reg_weight=1e-3 ...]
    torchrun --nproc_per_node 2 launch/train.py --config configs/train/sasrec.yaml \
        --data LOO_DATASET_DIR --out RUN_DIR [--features FEATURES_DIR model.item_input=id+features]

DATASET_DIR may also be an MMRec data folder (one .inter file). Writes RUN_DIR/config.yaml,
metrics.jsonl (one line per evaluation) and final.json (test metrics at the best valid epoch).
"""

from __future__ import annotations

import sys

from cliper_dist import config, dist
from cliper_dist.model.registry import MODELS
from cliper_dist.train.job import TrainConfig, run


def main() -> None:
    cfg = config.from_cli(TrainConfig, sys.argv[1:], f"Train a recommender ({', '.join(MODELS)}: model.name) "
                          "across torchrun ranks; writes RUN_DIR/config.yaml, metrics.jsonl, "
                          "final.json and checkpoints/. --config may repeat: a model's file, then a dataset's.",
                          flags=("data", "features", "out"))
    info = dist.init(device=cfg.device)
    final = run(cfg, info)
    if info.is_main and final is not None:
        print(format_final(final))


def format_final(final: dict) -> str:
    """The metrics table printed at the end of a run."""
    keys = list(final["test"])
    rows = [f"{'split':<6}" + "".join(f"{k:>11}" for k in keys)]
    for split in ("valid", "test"):
        rows.append(f"{split:<6}" + "".join(f"{final[split][k]:>11.4f}" for k in keys))
    rows.append(f"model {final['model']}, best epoch {final['best_epoch']} of {final['epochs']}, "
                f"{final['s_per_epoch']:.3f} s/epoch, world size {final['world_size']}")
    return "\n".join(rows)


if __name__ == "__main__":
    dist.run_main(main)
