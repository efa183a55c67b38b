"""What kind of directory a path is, and the rules that keep jobs out of each other's outputs.

Each job reads directories of one kind and writes one of its own: convert writes a dataset,
pretrain reads a dataset and writes a CLIP checkpoint, encode reads a dataset and writes a
feature store, adapt reads both and writes adapted features, train reads a dataset (or an
MMRec folder) and features and writes a run. A directory is recognised by the files its job
always writes, so a wrong path is reported as what it is ("... is a feature store; --data
wants a dataset directory") instead of failing deep inside a reader, and an output path that
would overwrite an input, or another job's directory, is refused before any work.
"""

from __future__ import annotations

from pathlib import Path

from cliper_dist.data import schema
from cliper_dist.errors import UserError

DATASET = "dataset directory"
FEATURES = "feature store"
ADAPTED = "adapted feature directory"
PRETRAINED = "CLIP training run"
RUN = "training run"
MMREC = "MMRec folder"
EMPTY = "empty directory"
FILE = "file"
MISSING = "missing"
OTHER = "directory of unknown kind"


def kind(path: str | Path) -> str:
    """The kind of ``path``, recognised by the files its writer always creates first."""
    path = Path(path)
    if not path.exists():
        return MISSING
    if not path.is_dir():
        return FILE
    names = {p.name for p in path.iterdir()}
    if not names:
        return EMPTY
    if schema.PROGRESS_DIR in names or (schema.MANIFEST in names and names & {schema.ITEMS, schema.SHARD_DIR,
                                                                              schema.INTERACTIONS}):
        return DATASET  # .progress: a conversion under way or interrupted (it resumes)
    if schema.PARTS_DIR in names or (schema.MANIFEST in names and f"{schema.TEXT_VIEWS}.npy" in names):
        return FEATURES
    if "adapt" in names:
        return ADAPTED  # adapt/: the adapt job's config, metrics and checkpoints
    if "pretrain" in names:
        return PRETRAINED  # pretrain/: the pretrain job's config, metrics and checkpoint
    if "checkpoints" in names or "metrics.jsonl" in names:
        return RUN
    if any(n.endswith(".inter") for n in names) or names & {schema.MMREC_IMAGE, schema.MMREC_TEXT}:
        return MMREC
    return OTHER


def expect(path: str | Path, wanted: tuple[str, ...], flag: str) -> str:
    """The kind of input ``path``, which must be one of ``wanted``; else one line saying what it is."""
    found = kind(path)
    if found in wanted:
        return found
    what = " or ".join(_a(w) for w in wanted)
    if found == MISSING:
        raise UserError(f"{path} does not exist; {flag} wants {what}")
    raise UserError(f"{path} is {_a(found)}; {flag} wants {what}")


def check_output(out: str | Path, own: str, inputs: dict[str, str | Path], flag: str = "--out") -> None:
    """Refuse an output directory that is, contains or lies inside one of ``inputs`` (flag -> path),
    or that already holds another kind of directory than ``own`` (the job's own kind resumes)."""
    out_abs = Path(out).resolve()
    for in_flag, path in inputs.items():
        if not path:
            continue
        in_abs = Path(path).resolve()
        if out_abs == in_abs or in_abs in out_abs.parents or out_abs in in_abs.parents:
            raise UserError(f"{flag} {out} overlaps the input {in_flag} {path}; write to a new directory")
    found = kind(out)
    if found not in (MISSING, EMPTY, own):
        raise UserError(f"{flag} {out} is {_a(found)}, not {_a(own)}; write to a new directory")


def _a(noun: str) -> str:
    return ("an " if noun[0] in "aeiouM" else "a ") + noun
