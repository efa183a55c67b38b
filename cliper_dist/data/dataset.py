"""Read access to a dataset directory (see ``schema``): manifest, shards, sizes, interactions."""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from cliper_dist import dirs
from cliper_dist.data import schema
from cliper_dist.data.interactions import Interactions, read_inter
from cliper_dist.errors import UserError


@dataclass(frozen=True)
class DatasetDir:
    path: Path

    @classmethod
    def open(cls, path: str | Path, flag: str = "--data") -> "DatasetDir":
        dirs.expect(path, (dirs.DATASET,), flag)
        if not (Path(path) / schema.MANIFEST).is_file():
            raise UserError(f"{path}: the dataset has no {schema.MANIFEST} (did the conversion finish?)")
        return cls(Path(path))

    @cached_property
    def manifest(self) -> dict:
        try:
            return json.loads((self.path / schema.MANIFEST).read_text())
        except json.JSONDecodeError as e:
            raise UserError(f"{self.path / schema.MANIFEST}: not valid JSON ({e})") from None

    @property
    def num_items(self) -> int:
        return int(self.manifest["counts"]["items"])

    @property
    def num_users(self) -> int:
        return int(self.manifest["counts"]["users"])

    @property
    def shard_names(self) -> list[str]:
        return [s["name"] for s in self.manifest["shards"]]

    @property
    def shard_sizes(self) -> dict[str, int]:
        return {s["name"]: int(s["samples"]) for s in self.manifest["shards"]}

    def shard_path(self, name: str) -> Path:
        path = self.path / schema.SHARD_DIR / name
        if not path.is_file():
            raise UserError(f"shard listed in the manifest is missing: {path}")
        return path

    def interactions(self) -> Interactions:
        inter = read_inter(self.path / schema.INTERACTIONS)
        inter.validate(self.num_users, self.num_items, str(self.path / schema.INTERACTIONS))
        return inter
