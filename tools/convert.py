"""Convert a catalog into a cliper-dist dataset directory; see ``cliper_dist/convert/cli.py``.

    python tools/convert.py {jsonl,amazon2014,amazon2023,mmrec} ... --out DATASET_DIR
"""

import sys

from cliper_dist.convert.cli import main
from cliper_dist.errors import run_tool

if __name__ == "__main__":
    sys.exit(run_tool(main))
