"""DatasetWriter: normalised items + interactions -> the dataset directory contract (see ``schema``).

A reader (one per source format) hands it the interactions first, then the items in index
order, then calls ``finish``. Items stream through: each full shard (``shard_size``
consecutive indices, so boundaries never depend on timing) is downloaded if needed and
handed to a worker, which writes the tar and its done record. Only ids and the shards in
flight are held in memory. A shard that an earlier run finished (same inputs, same options,
checksum intact) is not redone, so reruns resume and end byte-identical.

Several ranks (``rank``/``world_size``, the convert job under torchrun) each run the same
reader over the whole input, so item indices, dedup and reader rejects agree everywhere,
and rank r builds the shards s with s % world_size == r. ``finish`` is the one
collective: once every rank has waited for its own shards, rank 0 raises a strict error
from any rank, or assembles ``items.jsonl``, the image counts and the image rejects from
the done records in shard order, then writes the id maps, the interactions,
``rejects.jsonl`` and the manifest; the other ranks are done. One process is the world of
one of the same code, and any world size writes the same bytes.

Every input the writer cannot use is counted and listed by ``Rejects`` (on rank 0).
"""

from __future__ import annotations

import json
import multiprocessing
import os
from collections import Counter, deque
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import asdict, dataclass, replace
from functools import partial
from pathlib import Path
from typing import IO, Any, Callable, Literal, get_args

import numpy as np

from cliper_dist import files
from cliper_dist.convert.download import Downloader, is_url
from cliper_dist.convert.ids import IdCodes
from cliper_dist.convert.images import local_path
from cliper_dist.convert.interactions import SourceInteractions
from cliper_dist.convert.rejects import Rejects
from cliper_dist.convert.shardwork import (CORRUPT, IMAGE_STATES, UNAVAILABLE, WITH_IMAGE, PendingItem, ShardResult,
                                           ShardTask, build_shard, fingerprint, load_finished, read_record)
from cliper_dist.data import schema
from cliper_dist.data.interactions import Interactions, split_per_user, write_inter
from cliper_dist.data.shards import ShardInfo
from cliper_dist.data.text import category_paths, text_fields
from cliper_dist.errors import UserError

FORMAT_VERSION = 1
REJECTS = "rejects.jsonl"
Split = Literal["random", "temporal", "loo"]
SPLITS: tuple[str, ...] = get_args(Split)


@dataclass(frozen=True)
class WriterOptions:
    shard_size: int = 1000
    max_image_side: int = 512
    jpeg_quality: int = 90
    split: Split = "random"   # when the source has no x_label: "random" (seeded), "temporal" or "loo" (by time)
    split_seed: int = 999
    strict: bool = False
    workers: int = 1          # processes re-encoding images; 1 = in this process
    max_unavailable_images: float = 0.5  # share of named images that may be unreadable before convert stops
    keep_duplicates: bool = False  # keep exact repeats of an interaction (default: merge them into the first)

    def __post_init__(self) -> None:
        if self.shard_size < 1 or self.workers < 1 or self.max_image_side < 1:
            raise UserError("shard size, workers and max image side must be at least 1")
        if not 1 <= self.jpeg_quality <= 95:
            raise UserError(f"JPEG quality must be in [1, 95], got {self.jpeg_quality}")
        if not 0.0 <= self.max_unavailable_images <= 1.0:
            raise UserError(f"max unavailable images must be a share in [0, 1], got {self.max_unavailable_images}")
        if self.split not in SPLITS:
            raise UserError(f"split must be one of {', '.join(SPLITS)}, got {self.split!r}")

    def recorded(self) -> dict[str, Any]:
        """The options that shape the output (the worker count and the stop rule do not)."""
        return {k: v for k, v in asdict(self).items() if k not in ("workers", "max_unavailable_images")}


class DatasetWriter:
    """Use as a context manager: worker processes and temporary files are released on errors.

    On several ranks every rank makes one, with the same arguments and its own ``rank``.
    """

    def __init__(self, out_dir: str | Path, options: WriterOptions = WriterOptions(), source: dict | None = None,
                 image_dir: str | Path | None = None, downloader: Downloader | None = None, rank: int = 0,
                 world_size: int = 1):
        self.out = Path(out_dir)
        self.options = options
        self.source = source or {}
        self.image_dir = image_dir
        self.downloader = downloader
        self.rank, self.world_size = rank, world_size
        # .progress first: it marks the directory as a dataset (``dirs.kind``), so a rank that
        # checks --out while another creates it never sees a directory of unknown kind
        for sub in (schema.PROGRESS_DIR, schema.SHARD_DIR):
            (self.out / sub).mkdir(parents=True, exist_ok=True)
        self.rejects = Rejects(self.out if rank == 0 else None, options.strict)
        self.counts: Counter = Counter()
        self._unavailable_reasons: Counter = Counter()  # why images are unavailable (``_check_images``)
        self.resumed_shards = 0  # shards kept from an earlier run: this rank's; after ``finish``, all ranks'
        self.item_index = IdCodes()
        self.shards: list[ShardInfo] = []
        self._interactions: SourceInteractions | None = None
        self._pending: list[PendingItem] = []
        self._planned: list[tuple[str, str]] = []  # (name, fingerprint) of every shard so far, any rank's
        self._in_flight: deque[tuple[int, Future | Callable[[], ShardResult]]] = deque()
        self._failure: tuple[int, str] | None = None  # (shard number, message) of this rank's first strict error
        self._settings = {"max_side": options.max_image_side, "quality": options.jpeg_quality}
        self._pool = None
        if options.workers > 1:
            # forkserver: workers start clean even while download threads run in this process.
            context = multiprocessing.get_context("forkserver" if os.name == "posix" else "spawn")
            self._pool = ProcessPoolExecutor(max_workers=options.workers, mp_context=context)

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def close(self) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)
            self._pool = None
        self.rejects.close()

    # -- inputs -------------------------------------------------------------------------------

    def set_interactions(self, inter: SourceInteractions) -> SourceInteractions:
        """Take the interactions before the items, so their problems show before any image work.

        Exact repeats (``SourceInteractions.repeats``) are counted, and merged into their first
        occurrence unless ``keep_duplicates``; returns the interactions as kept.
        """
        if inter.split is None and self.options.split in ("temporal", "loo") and inter.timestamp is None:
            raise UserError(f"{inter.path}: --split {self.options.split} needs timestamps, and this file has none")
        repeat = inter.repeats()
        self.counts["duplicate_interactions"] = int(repeat.sum())
        if not self.options.keep_duplicates and repeat.any():
            inter = inter.subset(~repeat)
            self.rejects.ledger.tally(inter.path).merged += self.counts["duplicate_interactions"]
        self._interactions = inter
        return inter

    def keep_interactions(self, mask: np.ndarray, filtered: dict[str, int]) -> None:
        """Keep the rows of ``mask`` of the interactions set; a filter (the k-core) removed the
        others for the reasons counted in ``filtered`` (rejects of the rest are the caller's)."""
        src = self._interactions
        self.rejects.ledger.tally(src.path).filtered.update({k: n for k, n in filtered.items() if n})
        self._interactions = src.subset(mask)

    def reject_unknown_items(self, src: SourceInteractions, rows: np.ndarray, why: str) -> None:
        """``unknown_item`` rejects of the interaction ``rows`` (indices, in source order)."""
        for row in rows:
            item_id = src.item_ids[src.item[row]]
            self.rejects.add("unknown_item", f"interaction names item {item_id!r}, {why}",
                             f"{src.path}:{src.line[row]}", item_id)

    def add_item(self, item_id: str, raw: dict[str, Any], image: str | None, where: str,
                 described: bool = True) -> int | None:
        """One catalog item; returns its index, or None when it is a reject.

        ``raw`` holds title/brand/categories/description in any of the accepted shapes;
        ``image`` is a path (relative to the image directory, or absolute) or a URL.
        ``described=False``: the source has no record for this item (MMRec items outside a
        partial text file), so empty text is counted but is not a defect of any input line.
        """
        item_id = str(item_id).strip() if item_id is not None else ""
        if not item_id:
            self.rejects.add("missing_item_id", "record has no item id", where)
            return None
        if item_id in self.item_index:
            self.rejects.add("duplicate_item", f"item id {item_id!r} seen before; the first record is kept",
                             where, item_id)
            return None
        fields = text_fields(raw)
        if not any(fields.values()):
            self.counts["without_text"] += 1
            if described:
                self.rejects.add("empty_text", "no title, brand, categories or description; kept, its text views "
                                 "read Missing", where, item_id)
        image = str(image).strip() if image else None
        file = None
        if image and is_url(image):
            if self.downloader is None:
                self.counts["image_urls_not_fetched"] += 1
        elif image:
            file = str(local_path(image, self.image_dir))
        index = self.item_index.add(item_id)
        paths = tuple(map(tuple, category_paths(raw.get("categories"))))
        self._pending.append(PendingItem(index, item_id, fields, image or None, where, file, category_paths=paths))
        if len(self._pending) >= self.options.shard_size:
            self._flush()
        return index

    # -- shards -------------------------------------------------------------------------------

    def _flush(self) -> None:
        # The manifest marks a complete directory: it goes before the first shard changes and
        # comes back last. (An input error before this point leaves an earlier dataset intact.)
        (self.out / schema.MANIFEST).unlink(missing_ok=True)
        items, self._pending = self._pending, []
        number = len(self._planned)
        name = schema.shard_name(number)
        # Whether URLs are fetched matters only to shards that have URLs: adding --download
        # later redoes just those.
        has_urls = any(it.image and is_url(it.image) for it in items)
        digest = fingerprint(items, {**self._settings, "download": has_urls and self.downloader is not None})
        self._planned.append((name, digest))
        if number % self.world_size != self.rank or self._failure is not None:
            return  # another rank's shard; or this rank has failed, and finish will say so
        path, record = self._paths(name)
        if load_finished(path, record, digest) is not None:
            self.resumed_shards += 1
            return
        o = self.options
        task = ShardTask(str(path), str(record), tuple(self._download(items)), o.max_image_side, o.jpeg_quality,
                         o.strict, digest)
        work = partial(build_shard, task) if self._pool is None else self._pool.submit(build_shard, task)
        self._in_flight.append((number, work))
        while len(self._in_flight) > (0 if self._pool is None else 2 * self.options.workers):
            self._complete(*self._in_flight.popleft())

    def _paths(self, name: str) -> tuple[Path, Path]:
        """A shard's tar and its done record."""
        return self.out / schema.SHARD_DIR / name, self.out / schema.PROGRESS_DIR / f"{Path(name).stem}.json"

    def _download(self, items: list[PendingItem]) -> list[PendingItem]:
        if self.downloader is None:
            return items
        urls = list(dict.fromkeys(it.image for it in items if it.image and is_url(it.image)))
        fetched = dict(zip(urls, self.downloader.fetch_all(urls)))
        return [replace(it, file=str(fetched[it.image].path) if fetched[it.image].path else None,
                        error=fetched[it.image].error, cause=fetched[it.image].cause) if it.image in fetched else it
                for it in items]

    def _complete(self, number: int, work: Future | Callable[[], ShardResult]) -> None:
        """Wait for one of this rank's shards (in shard order). A strict error is kept, not
        raised: the other ranks learn of it in ``finish``, so rank 0 can report it."""
        try:
            work.result() if isinstance(work, Future) else work()
        except UserError as e:
            if self._failure is None:
                self._failure = (number, str(e))

    # -- finish -------------------------------------------------------------------------------

    def finish(self, extra_counts: dict[str, int] | None = None) -> dict | None:
        """Write the remaining shard; then, on rank 0, the items, id maps, `.inter` file, rejects
        and, last, the manifest, which it returns (the other ranks return None)."""
        if self._pending:
            self._flush()
        while self._in_flight:
            self._complete(*self._in_flight.popleft())
        if not self.item_index:
            first = self.rejects.first
            raise UserError(f"no items were converted ({sum(self.rejects.counts.values())} rejects: "
                            f"{dict(self.rejects.counts)}" + (f"; the first: {first['where']}: {first['kind']}: "
                                                              f"{first['reason']}" if first else "") + ")")
        self._agree()
        if self.rank != 0:
            self.close()
            return None
        with files.atomic_open(self.out / schema.ITEMS, "w") as items:
            self._assemble(items)
            self._check_images()  # before items.jsonl takes its place
        inter, user_ids, how = self._index_interactions()
        ledger = self.rejects.ledger
        if self._interactions is not None:
            ledger.tally(self._interactions.path).kept += len(inter)
        ledger.check()
        write_inter(self.out / schema.INTERACTIONS, inter)
        files.write_jsonl(self.out / schema.USERS, ({"index": i, "user_id": u} for i, u in enumerate(user_ids)))
        self.rejects.write(self.out / REJECTS)
        self._remove_stale()
        counts = {"items": len(self.item_index), **{s: self.counts[s] for s in IMAGE_STATES},
                  "without_text": self.counts["without_text"],
                  "image_urls_not_fetched": self.counts["image_urls_not_fetched"],
                  "users": len(user_ids),
                  "interactions": {"total": len(inter), **inter.counts()},
                  "duplicate_interactions": self.counts["duplicate_interactions"],
                  **(extra_counts or {}),
                  "rejects": dict(sorted(self.rejects.counts.items())),
                  "accounting": ledger.report(self.source)}
        manifest = {"format_version": FORMAT_VERSION, "source": self.source, "options": self.options.recorded(),
                    "split": how, "counts": counts, "shards": [asdict(s) for s in self.shards]}
        files.write_json(self.out / schema.MANIFEST, manifest)
        self.close()
        return manifest

    def _agree(self) -> None:
        """Wait until every rank is done with its shards. Rank 0 raises any rank's strict error
        (the first in shard order, as one process would meet it) or learns how many shards
        were kept from an earlier run.

        Only rank 0 raises: it prints the error, and a failing rank that exited first would
        have torchrun stop rank 0 before it could.
        """
        mine = (self._failure, self.resumed_shards)
        if self.world_size == 1:
            everyone = [mine]
        else:
            from cliper_dist import dist  # here: torch, which one process does not need

            everyone = dist.all_gather_object(mine)
        failures = [failure for failure, _ in everyone if failure is not None]
        if failures and self.rank == 0:
            raise UserError(min(failures)[1])
        self.resumed_shards = sum(kept for _, kept in everyone)

    def _assemble(self, items: IO[str]) -> None:
        """Items (written to ``items``), image counts and image rejects from every shard's done
        record, in shard order.

        A record only has to match its fingerprint: the rank that owns the shard checked the
        tar's sha256 (or wrote it) in this run, so rank 0 does not read every tar again.
        """
        for name, digest in self._planned:
            record = self._paths(name)[1]
            result = read_record(record, digest)
            if result is None:
                raise UserError(f"{record} is missing or belongs to another conversion: every rank must "
                                "see --out at the same path (on several machines, a shared filesystem), "
                                "and only one conversion may write it at a time")
            self.shards.append(result.info)
            self.counts.update(result.states)
            self._unavailable_reasons.update(r.get("cause", r["reason"])  # records from before causes: whole
                                             for r in result.rejects if r["kind"] == "image_unavailable")
            items.writelines(json.dumps(row, ensure_ascii=False) + "\n" for row in result.rows)
            self.rejects.add_from_shard(result.rejects)

    def _check_images(self) -> None:
        """Stop when most named images cannot be read: a wrong --images is a typo, not missing data."""
        unavailable = self.counts[UNAVAILABLE]
        named = unavailable + self.counts[WITH_IMAGE] + self.counts[CORRUPT]
        if named and unavailable > self.options.max_unavailable_images * named:
            self.rejects.write(self.out / REJECTS)  # the reason of each, for the user to read
            if self.downloader is not None:
                top = ", ".join(f"{n}: {why}" for why, n in self._unavailable_reasons.most_common(2))
                raise UserError(f"{unavailable} of {named} item images could not be fetched ({top}); reasons per "
                                f"image in {self.out / REJECTS}. Pass --allow-missing-images (launch/convert.py: "
                                "allow_missing_images=true) to convert without them, or fetch them elsewhere and "
                                "pass --images DIR")
            where = f"--images {self.image_dir}" if self.image_dir else "the catalog's image paths (no --images given)"
            raise UserError(f"{unavailable} of {named} item images are unavailable under {where} (reasons per image "
                            f"in {self.out / REJECTS}); check the directory, or pass --allow-missing-images "
                            "(launch/convert.py: allow_missing_images=true) to convert without them")

    def _index_interactions(self) -> tuple[Interactions, IdCodes, str]:
        """Source interactions -> index space; rows naming unknown items become rejects."""
        src = self._interactions
        if src is None:
            empty = np.zeros(0, dtype=np.int64)
            return Interactions(empty, empty, empty), IdCodes(), "none"
        code_index = self.item_index.find(src.item_ids.names)
        item = code_index[src.item]
        self.reject_unknown_items(src, np.flatnonzero(item < 0), "which is not in the catalog")
        keep = item >= 0
        src, item = src.subset(keep), item[keep]
        if src.fixed_users:
            user, user_ids = src.user, src.user_ids
        else:
            user, user_ids = _first_seen(src.user, src.user_ids)
        by_time = self.options.split in ("temporal", "loo")
        if src.split is not None:
            split, how = src.split, "source"
        else:
            split = split_per_user(user, item, self.options.split_seed, src.timestamp if by_time else None,
                                   leave_one_out=self.options.split == "loo").split
            how = self.options.split
        return Interactions(user, item, split, rating=src.rating, timestamp=src.timestamp), user_ids, how

    def _remove_stale(self) -> None:
        """Shards, records and temporary files that this run did not produce (a longer earlier run)."""
        keep = {s.name for s in self.shards}
        for path in (self.out / schema.SHARD_DIR).iterdir():
            if path.name not in keep:
                path.unlink()
        keep_records = {f"{Path(n).stem}.json" for n in keep}
        for path in (self.out / schema.PROGRESS_DIR).iterdir():
            if path.name not in keep_records:
                path.unlink()


def _first_seen(codes: np.ndarray, names: IdCodes) -> tuple[np.ndarray, IdCodes]:
    """Renumber codes 0.. in order of first appearance; the names of the new numbers."""
    if len(codes) == 0:
        return codes, IdCodes()
    uniq, first = np.unique(codes, return_index=True)
    order = uniq[np.argsort(first)]
    remap = np.full(int(codes.max()) + 1, -1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    return remap[codes], names.take(order)
