"""CLIPER multi-view encoding of a dataset directory into an item feature store.

    torchrun --nproc_per_node 8 launch/encode.py --data DATASET_DIR --out FEATURES_DIR \
        --model ViT-L-14 --pretrained /ckpt/model.safetensors [batch_size=256 workers=6 tau=0.1 ...]

MODEL is an open_clip model name or a model config .json; CKPT a local checkpoint file or
directory. ``--config configs/encode/cliper.yaml`` fills the keys of ``EncodeConfig``;
``key.sub=value`` overrides patch them (``text.mode=truncate text.context_length=248`` for
Long-CLIP style long text). Runs as a world of one without torchrun. Rerunning skips
finished shards. See docs/encode.md.
"""

from __future__ import annotations

import sys

from cliper_dist import config, dist
from cliper_dist.encode.job import EncodeConfig, run


def main() -> None:
    cfg = config.from_cli(EncodeConfig, sys.argv[1:], "CLIPER multi-view CLIP encoding of a dataset's items, shard "
                          "by shard across torchrun ranks, resumable; writes a feature store to --out",
                          flags=("data", "out", "model", "pretrained"))
    run(cfg, dist.init(device=cfg.device))


if __name__ == "__main__":
    dist.run_main(main)
