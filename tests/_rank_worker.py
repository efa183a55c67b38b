"""Entry point torchrun starts for ``Ranks.run``: call a test function, store its result."""

import importlib
import os
import pickle
import sys

from cliper_dist import dist


def main() -> None:
    spec = sys.argv[1]
    with open(spec, "rb") as f:
        module, qualname, args = pickle.load(f)
    fn = importlib.import_module(module)
    for part in qualname.split("."):
        fn = getattr(fn, part)
    result = fn(*args)
    with open(f"{spec}.rank{os.environ['RANK']}", "wb") as f:
        pickle.dump(result, f)


if __name__ == "__main__":
    dist.run_main(main)
