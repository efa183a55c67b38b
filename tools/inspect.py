"""Summarise a dataset directory, verify its shards against the manifest, dump a few samples.

    python tools/inspect.py DATASET_DIR [--verify] [--dump N --dump-dir DIR]

Exit status: 0 fine, 1 verification found problems, 2 not a dataset directory.
"""

import os
import sys

# This file shares its name with the standard library's `inspect`, and Python puts tools/ first
# on sys.path for any script in it, so `import inspect` (dataclasses does it) would find this
# file. Drop tools/ from the path, and if we were imported as `inspect`, become the real one.
_HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or os.curdir) != _HERE]
if __name__ != "__main__":
    del sys.modules[__name__]
    import inspect as _stdlib_inspect  # noqa: E402

    sys.modules[__name__] = _stdlib_inspect
else:
    import argparse  # noqa: E402

    from cliper_dist.config import ToolHelp  # noqa: E402
    from cliper_dist.data.dataset import DatasetDir  # noqa: E402
    from cliper_dist.data.verify import dump, summary, verify  # noqa: E402
    from cliper_dist.errors import run_tool  # noqa: E402

    def main(argv: list[str]) -> int:
        parser = argparse.ArgumentParser(prog="inspect", description=__doc__.split("\n")[0], formatter_class=ToolHelp)
        parser.add_argument("dataset", help="a dataset directory (tools/convert.py output)")
        parser.add_argument("--verify", action="store_true", help="check every shard against the manifest")
        parser.add_argument("--dump", type=int, default=0, metavar="N", help="write the first N samples")
        parser.add_argument("--dump-dir", default=None, help="where --dump writes images and text (needed with --dump)")
        args = parser.parse_args(argv)
        if args.dump and not args.dump_dir:
            parser.error("--dump needs --dump-dir")
        ds = DatasetDir.open(args.dataset, flag="inspect")
        print(summary(ds))
        status = 0
        if args.verify:
            problems = verify(ds)
            for line in problems:
                print(f"  PROBLEM {line}")
            print(f"verify: {'OK' if not problems else f'{len(problems)} problems'}")
            status = 1 if problems else 0
        if args.dump:
            for line in dump(ds, args.dump, args.dump_dir):
                print(f"  {line}")
        return status

    sys.exit(run_tool(main, sys.argv[1:]))
