"""Batch scoring on Ray Data (``eeopt.ray.map_batches``, ``eeopt run --ray``): an actor pool in
which each worker loads the program once; every output row carries its input row's id."""

from __future__ import annotations

import glob
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from eeopt.errors import DataError, UsageError
from eeopt.program import write_dir
from eeopt.runtime import load

__all__ = ["ROW", "Scorer", "input_files", "map_batches", "score_parts"]

#: the id column every output row carries (the input's, or the row's position in the input)
ROW = "row"


class Scorer:
    """One Ray Data worker: the program, loaded once. ``__call__`` maps a batch (a dict of
    columns: the program's inputs, plus ``row``) to ``row``, ``exit``, ``exit_name`` and one
    ``logit_<c>`` column per class (flat columns: Parquet-friendly, no tensor extension)."""

    def __init__(self, program_dir: str, threads: int = 1) -> None:
        self.program = load(program_dir, threads=threads)
        self.names = [s.name for s in self.program.input_specs]
        self.exit_names = np.array(self.program.exit_names)

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        missing = [n for n in self.names if n not in batch]
        if missing:
            raise DataError(f"the data set has no column {missing[0]!r}; the program reads "
                            + ", ".join(self.names))
        feeds = {}
        for spec in self.program.input_specs:
            col = batch[spec.name]
            if col.dtype == object:  # a ragged or list column: stack the rows
                col = np.stack([np.asarray(v) for v in col])
            feeds[spec.name] = np.ascontiguousarray(col, dtype=np.dtype(spec.dtype))
        rows = next(iter(feeds.values())).shape[0]
        res = self.program.run(feeds)
        out: dict[str, np.ndarray] = {
            ROW: np.asarray(batch[ROW]) if ROW in batch else np.arange(rows, dtype=np.int64),
            "exit": res.exit, "exit_name": self.exit_names[res.exit]}
        for c in range(res.logits.shape[1]):
            out[f"logit_{c}"] = res.logits[:, c]
        return out


def map_batches(dataset: Any, program_dir: str | os.PathLike[str], *, batch_size: int = 256,
                concurrency: int = 1, threads: int = 1, num_cpus: float = 1.0) -> Any:
    """``dataset`` (a ``ray.data.Dataset`` with one column per program input, plus ``row`` if
    it has ids) scored by the program on a pool of ``concurrency`` actors. Returns the lazy
    dataset of results (``row``, ``exit``, ``exit_name``, ``logit_0``...)."""
    if batch_size < 1 or concurrency < 1:
        raise UsageError("batch_size and concurrency must be >= 1")
    load(program_dir)  # a bad directory is one line here, not an actor failure
    return dataset.map_batches(Scorer, fn_constructor_args=(str(Path(program_dir).resolve()),
                                                            threads),
                               batch_size=batch_size, batch_format="numpy",
                               concurrency=concurrency, num_cpus=num_cpus)


def input_files(spec: str) -> list[Path]:
    """The ``.npy``/``.npz`` files of a directory or a glob, sorted."""
    p = Path(spec)
    if p.is_dir():
        files = sorted(f for f in p.iterdir() if f.suffix in (".npy", ".npz"))
    else:
        files = sorted(Path(f) for f in glob.glob(spec) if f.endswith((".npy", ".npz")))
    if not files:
        raise UsageError(f"{{input}} {spec} names no .npy or .npz file: give a directory or a "
                         "glob such as 'data/*.npz'")
    return files


def score_parts(program_dir: str | os.PathLike[str],
                parts: Sequence[tuple[str, dict[str, np.ndarray]]], out: Path, *,
                batch_size: int = 256, concurrency: int = 1, threads: int = 1,
                num_cpus: float = 1.0) -> int:
    """Score ``parts`` (``(where from, feeds)``, e.g. one per input file) on Ray Data and
    write Parquet shards to ``out`` (a new directory, made whole or not at all); ``row``
    numbers the rows across the parts in order. Returns the rows written."""
    import ray

    program = load(program_dir)
    names = [s.name for s in program.input_specs]
    blocks = []
    start = 0
    for where, arrays in parts:
        missing = [n for n in names if n not in arrays]
        if missing:
            raise DataError(f"{where} has no array {missing[0]!r}; the program reads "
                            + ", ".join(names))
        n = int(arrays[names[0]].shape[0])
        blocks.append({ROW: np.arange(start, start + n, dtype=np.int64),
                       **{k: arrays[k] for k in names}})
        start += n
    dataset = ray.data.from_arrow([_to_arrow(b) for b in blocks])
    scored = map_batches(dataset, program_dir, batch_size=batch_size, concurrency=concurrency,
                         threads=threads, num_cpus=num_cpus)
    write_dir(out, lambda tmp: scored.write_parquet(str(tmp)))
    return start


def _to_arrow(block: dict[str, np.ndarray]) -> Any:
    """A pyarrow table of one file's rows; inputs with more than one axis per row become
    fixed-shape tensor columns."""
    import pyarrow as pa

    cols = {}
    for k, v in block.items():
        if v.ndim == 1:
            cols[k] = pa.array(v)
        else:
            flat = pa.array(np.ascontiguousarray(v).reshape(-1))
            cols[k] = pa.FixedShapeTensorArray.from_storage(
                pa.fixed_shape_tensor(flat.type, list(v.shape[1:])),
                pa.FixedSizeListArray.from_arrays(flat, int(np.prod(v.shape[1:]))))
    return pa.table(cols)
