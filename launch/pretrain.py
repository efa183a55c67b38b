"""Contrastive training of an open_clip model on a catalog's own item images and view prompts.

    torchrun --nproc_per_node 2 launch/pretrain.py --data DATASET_DIR --model MODEL [--init CKPT] \
        --out DIR [steps=1000 batch_size=256 optim.lr=5e-4 ...]

Writes DIR/clip.pt (open_clip format: ``launch/encode.py --model MODEL --pretrained DIR/clip.pt``
loads it) and DIR/manifest.json; DIR/pretrain/ holds the config, the metrics (loss, samples/s,
held-out retrieval R@1/R@5 per view) and the resume checkpoint. Runs as a world of one without
torchrun. See docs/pretrain.md.
"""

from __future__ import annotations

import sys

from cliper_dist import config, dist
from cliper_dist.pretrain.job import PretrainConfig, run


def main() -> None:
    cfg = config.from_cli(PretrainConfig, sys.argv[1:], "Train or fine-tune an open_clip model contrastively on "
                          "the dataset's image-text pairs, DDP across torchrun ranks; writes an open_clip "
                          "checkpoint to --out", flags=("data", "model", "init", "out"))
    run(cfg, dist.init(device=cfg.device))


if __name__ == "__main__":
    dist.run_main(main)
