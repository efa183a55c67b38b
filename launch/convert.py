"""Convert a catalog into a dataset directory, the image work spread over torchrun ranks.

    torchrun --nproc_per_node 8 launch/convert.py --format jsonl --catalog items.jsonl --images DIR \
        --interactions inter.csv --out DATASET_DIR [shard_size=1000 workers=2 download.enabled=true ...]

Every rank reads the text inputs; rank r re-encodes the images of shards s with s % P == r;
rank 0 writes items.jsonl, the id maps, the interactions, rejects.jsonl and the manifest.
Shard boundaries do not depend on P, so any number of ranks writes the dataset that
``tools/convert.py`` (the same job as one process) writes. ``--config FILE`` fills the keys of
``ConvertConfig``; ``key.sub=value`` overrides patch them. Runs as a world of one without
torchrun. Rerunning, on any number of ranks, skips finished shards. See docs/convert.md.
"""

from __future__ import annotations

import sys

from cliper_dist import config, dist
from cliper_dist.convert.job import FINISH_TIMEOUT_S, ConvertConfig, run


def main() -> None:
    cfg = config.from_cli(ConvertConfig, sys.argv[1:], "Convert a catalog (jsonl, amazon2014, amazon2023, mmrec) into "
                          "a dataset directory, shards re-encoded across torchrun ranks, resumable; writes --out",
                          flags=("format", "out", "catalog", "images", "interactions", "meta", "reviews", "inter",
                                 "item_map", "user_map", "urls"))
    info = dist.init(device="cpu", collective_timeout_s=FINISH_TIMEOUT_S)  # gloo: only a few small objects travel
    run(cfg, info.rank, info.world_size)


if __name__ == "__main__":
    dist.run_main(main)
