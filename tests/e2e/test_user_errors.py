"""A new user's mistakes, through the real launchers and tools: refusals that keep earlier work
byte-identical, and one ``cliper-dist: error:`` line on stderr with no traceback."""

from __future__ import annotations

import dataclasses
import hashlib
import shutil
import subprocess
import sys
import typing
from pathlib import Path

import pytest
import torch

from tests.conftest import REPO, child_env

TRAIN, ENCODE, CONVERT = (REPO / "launch" / name for name in ("train.py", "encode.py", "convert.py"))
SMALL_RUN = ["model.name=lightgcn", "model.embedding_dim=8", "batch_size=256", "epochs=2", "threads=1"]


def run(args: list, timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, *map(str, args)], cwd=REPO, env=child_env(), capture_output=True,
                          text=True, timeout=timeout)


def one_error_line(result: subprocess.CompletedProcess, message: str) -> str:
    """The run failed with exit 2 and exactly one error line containing ``message``."""
    lines = [ln for ln in result.stderr.splitlines() if ln.startswith("cliper-dist: error:")]
    assert result.returncode == 2, result.stderr[-3000:]
    assert len(lines) == 1 and message in lines[0], result.stderr[-3000:]
    assert "Traceback" not in result.stderr and 'File "' not in result.stderr, result.stderr[-3000:]
    return lines[0]


def tree_digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def trained_run(demo_dataset, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("runs") / "run"
    result = run([TRAIN, "--data", demo_dataset, "--out", out, *SMALL_RUN])
    assert result.returncode == 0, result.stderr[-3000:]
    return out


# -- work that must never be lost or hidden ------------------------------------------------------

def test_encode_refuses_to_write_into_its_dataset(demo_dataset, tiny_clip):
    model, ckpt = tiny_clip
    before = tree_digest(demo_dataset)
    result = run([ENCODE, "--data", demo_dataset, "--out", demo_dataset, "--model", model, "--pretrained", ckpt])
    one_error_line(result, f"--out {demo_dataset} overlaps the input --data {demo_dataset}")
    assert tree_digest(demo_dataset) == before


def test_jobs_refuse_to_write_into_another_jobs_directory(demo_dataset, demo_features, tiny_clip, trained_run,
                                                          tmp_path):
    model, ckpt = tiny_clip
    other = tmp_path / "other"
    shutil.copytree(demo_dataset, other)
    before = {p: tree_digest(p) for p in (other, demo_features, trained_run)}
    one_error_line(run([ENCODE, "--data", demo_dataset, "--out", other, "--model", model, "--pretrained", ckpt]),
                   f"--out {other} is a dataset directory, not a feature store")
    one_error_line(run([ENCODE, "--data", demo_dataset, "--out", trained_run, "--model", model, "--pretrained",
                        ckpt]), f"--out {trained_run} is a training run, not a feature store")
    one_error_line(run([TRAIN, "--data", demo_dataset, "--out", demo_features, *SMALL_RUN]),
                   f"--out {demo_features} is a feature store, not a training run")
    one_error_line(run([TRAIN, "--data", demo_dataset, "--features", demo_features, "--out",
                        demo_features / "run", *SMALL_RUN]), "overlaps the input --features")
    assert {p: tree_digest(p) for p in before} == before


def test_a_changed_config_is_not_resumed(demo_dataset, trained_run):
    before = tree_digest(trained_run)
    line = one_error_line(run([TRAIN, "--data", demo_dataset, "--out", trained_run, *SMALL_RUN,
                               "model.reg_weight=0.01", "batch_size=128"]), "holds a run made with another config")
    assert "batch_size: 256 -> 128" in line and "model.reg_weight: 0.0001 -> 0.01" in line and "resume=never" in line
    line = one_error_line(run([TRAIN, "--data", demo_dataset, "--out", trained_run, *SMALL_RUN,
                               "model.embedding_dim=16"]), "model.embedding_dim: 8 -> 16")
    assert tree_digest(trained_run) == before
    # a larger epoch budget continues the same run
    more = run([TRAIN, "--data", demo_dataset, "--out", trained_run, *SMALL_RUN, "epochs=3"])
    assert more.returncode == 0 and "resumed from" in more.stderr + more.stdout, more.stderr[-3000:]


@pytest.mark.slow
def test_a_wrong_image_directory_stops_convert(demo_raw, tmp_path, tiny_clip):
    args = [REPO / "tools" / "convert.py", "jsonl", "--catalog", demo_raw["catalog"], "--images", tmp_path / "typo",
            "--interactions", demo_raw["interactions"], "--shard-size", "50"]
    one_error_line(run([*args, "--out", tmp_path / "d"]),
                   f"item images are unavailable under --images {tmp_path / 'typo'}")
    assert not (tmp_path / "d" / "manifest.json").exists()
    assert run([*args, "--out", tmp_path / "d", "--allow-missing-images"]).returncode == 0
    model, ckpt = tiny_clip
    encoded = run([ENCODE, "--data", tmp_path / "d", "--out", tmp_path / "f", "--model", model, "--pretrained", ckpt,
                   "workers=0"])
    assert encoded.returncode == 0, encoded.stderr[-3000:]
    assert "encode: only 0 of 120 items have an image" in encoded.stderr + encoded.stdout
    assert f"{tmp_path / 'f'}/missing_images.txt will list them" in encoded.stderr + encoded.stdout
    # every item has the default image: FREEDOM refuses the features, and takes them with the key
    freedom = [TRAIN, "--data", tmp_path / "d", "--features", tmp_path / "f", "model.name=freedom",
               "model.embedding_dim=8", "batch_size=256", "epochs=1", "threads=1"]
    one_error_line(run([*freedom, "--out", tmp_path / "r"]),
                   f"image features of {tmp_path / 'f'} are degenerate: 120 of 120 items share their row")
    accepted = run([*freedom, "--out", tmp_path / "r2", "model.accept_degenerate_features=true"])
    assert accepted.returncode == 0, accepted.stderr[-3000:]


# -- one line, never a traceback -----------------------------------------------------------------

@pytest.mark.slow
def test_wrong_directories_and_bad_checkpoints_are_one_line(demo_dataset, demo_features, tiny_clip, tmp_path):
    model, ckpt = tiny_clip
    truncated = tmp_path / "truncated.pt"
    truncated.write_bytes(Path(ckpt).read_bytes()[:4096])
    notes = tmp_path / "notes.txt"
    notes.write_text("not weights\n")
    state = torch.load(ckpt, weights_only=False)
    state["state_dict"]["text_projection"] = torch.zeros(3, 5)
    torch.save(state, tmp_path / "wrong.pt")
    inter = tmp_path / "x.inter"
    inter.write_text("userID\titemID\tx_label\n0\t0\t0\n")
    user_map = tmp_path / "u_id_mapping.csv"
    user_map.write_text("user_id,userID\nA1,0\n")
    encode = [ENCODE, "--out", tmp_path / "f", "--model", model]
    cases = [
        ([*encode, "--data", demo_dataset, "--pretrained", truncated], "is not a readable checkpoint"),
        ([*encode, "--data", demo_dataset, "--pretrained", notes], "is not a readable checkpoint"),
        ([*encode, "--data", demo_dataset, "--pretrained", tmp_path / "wrong.pt"],
         "clip-tiny.json: size mismatch for text_projection: copying a param with shape torch.Size([3, 5])"),
        ([*encode, "--data", demo_features, "--pretrained", ckpt],
         f"{demo_features} is a feature store; --data wants a dataset directory"),
        ([TRAIN, "--data", demo_features, "--out", tmp_path / "r"],
         f"{demo_features} is a feature store; --data wants a dataset directory or an MMRec folder"),
        ([TRAIN, "--data", demo_dataset, "--features", demo_dataset, "--out", tmp_path / "r"],
         f"{demo_dataset} is a dataset directory; --features wants a feature store or an adapted feature directory or an MMRec folder"),
        ([REPO / "tools" / "inspect_dataset.py", demo_features],
         f"{demo_features} is a feature store; inspect_dataset wants a dataset directory"),
        ([REPO / "tools" / "view_report.py", demo_dataset],
         f"{demo_dataset} is a dataset directory; view_report wants a feature store"),
        ([REPO / "tools" / "view_report.py", demo_features, "--tau", "0"], "--tau must be > 0"),
        ([REPO / "tools" / "check_mmrec.py", tmp_path / "nope", "--inter", inter, "--item-map", user_map],
         "does not exist; check_mmrec wants a dataset directory"),
        ([REPO / "tools" / "check_mmrec.py", demo_dataset, "--inter", tmp_path / "no.inter", "--item-map", user_map],
         f"--inter {tmp_path / 'no.inter'}: interactions file not found"),
        ([REPO / "tools" / "check_mmrec.py", demo_dataset, "--inter", inter, "--item-map", user_map],
         "(the user and item maps swapped?)"),
    ]
    for args, message in cases:
        one_error_line(run(args), message)


def test_an_output_that_cannot_be_written_is_one_line(demo_raw, tmp_path):
    blocked = tmp_path / "file"
    blocked.write_text("a file where a directory should go\n")
    catalog = ["--catalog", demo_raw["catalog"], "--out", blocked / "dataset"]
    for args in ([REPO / "tools" / "convert.py", "jsonl", *catalog], [REPO / "launch" / "convert.py", *catalog]):
        one_error_line(run(args), f"cannot use {blocked / 'dataset'}")


def test_a_header_shorter_than_its_rows_is_explained(demo_raw, tmp_path):
    rows = (Path(demo_raw["interactions"]).read_text().splitlines())[1:]
    short = tmp_path / "short.csv"
    short.write_text("user_id,item_id\n" + "\n".join(rows) + "\n")
    result = run([REPO / "tools" / "convert.py", "jsonl", "--catalog", demo_raw["catalog"], "--images",
                  demo_raw["images"], "--interactions", short, "--out", tmp_path / "d"])
    one_error_line(result, f"all {len(rows):,} rows were rejected: they have 3 fields against the 2-field header")


def config_keys(cls: type, prefix: str = "") -> list[str]:
    """Every key's line start in --help: a model's keys are indented under its model.name line."""
    from cliper_dist.model.base import ModelConfig
    from cliper_dist.model.registry import MODELS

    hints, keys = typing.get_type_hints(cls), []
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if tp is ModelConfig:
            keys.append(f"\n  {prefix}{f.name}.name (")
            keys += [f"\n    {prefix}{f.name}.{k.name} (" for model in MODELS.values()
                     for k in dataclasses.fields(model.config_class) if k.name != "name"]
        elif dataclasses.is_dataclass(tp):
            keys += config_keys(tp, f"{prefix}{f.name}.")
        else:
            keys.append(f"\n  {prefix}{f.name} (")
    return keys


@pytest.mark.slow
def test_help_lists_every_config_key():
    from cliper_dist.convert.job import ConvertConfig
    from cliper_dist.encode.job import EncodeConfig
    from cliper_dist.train.job import TrainConfig

    for launcher, cls in ((TRAIN, TrainConfig), (ENCODE, EncodeConfig), (CONVERT, ConvertConfig)):
        result = run([launcher, "--help"], timeout=60)
        keys = config_keys(cls)
        assert result.returncode == 0 and len(keys) > 10
        assert all(k in result.stdout for k in keys), [k for k in keys if k not in result.stdout]
