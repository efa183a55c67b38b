"""CPMM-style adaptation of CLIPER features: image, text and item ID aligned in one contrastive space.

    torchrun --nproc_per_node 2 launch/adapt.py --data DATASET_DIR --features FEATURES_DIR \
        --out ADAPTED_DIR [epochs=20 model.dim=64 model.w_cooccur=1.0 ...]

Writes ADAPTED_DIR/image_feat.npy and text_feat.npy (what ``launch/train.py --features
ADAPTED_DIR`` reads) and manifest.json; ADAPTED_DIR/adapt/ holds the config, the per-epoch
losses and the resume checkpoints. Runs as a world of one without torchrun. See docs/adapt.md.
"""

from __future__ import annotations

import sys

from cliper_dist import config, dist
from cliper_dist.adapt.job import AdaptConfig, run


def main() -> None:
    cfg = config.from_cli(AdaptConfig, sys.argv[1:], "Align image, text and item-ID representations in one "
                          "contrastive space with co-interaction signal (CPMM), ID table column-parallel across "
                          "torchrun ranks; writes adapted features to --out", flags=("data", "features", "out"))
    run(cfg, dist.init(device=cfg.device))


if __name__ == "__main__":
    dist.run_main(main)
