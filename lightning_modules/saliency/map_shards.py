"""The files of a dataset saliency run, and :func:`load_maps`, their reader.

A run folder (``runs/saliency_dataset/version_N``) holds:

- ``maps/shard_00000.npz`` ...: one compressed file per shard of the dataset, written whole or
  not at all: ``paths`` and ``index`` (each image's path and position in the dataset), and per
  method ``M`` a float16 array ``[N, H, W]`` of the maps divided by their maximum, with that
  maximum in ``M.scale`` (float32 ``[N]``): float16 keeps about three significant digits of
  every map, whatever its magnitude (raw gradients can be 1e-8, below float16's range).
- ``maps/shard_00000.csv``: the shard's rows of the index (written after its ``.npz``, so a
  shard with a CSV is complete), including the images that could not be read.
- ``maps/manifest.json``: what the run explains and how (images, shard and batch sizes,
  methods, metrics), checked when a run is continued.
- ``index.csv``, ``skipped.csv``, ``explanation.json``: the whole run's, written when every
  shard is.
"""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

import numpy as np

from lightning_modules.errors import UserInputError

MAPS_FOLDER = "maps"
MANIFEST = "manifest.json"
INDEX = "index.csv"
SKIPPED = "skipped.csv"
EXPLANATION = "explanation.json"
SHARD_PATTERN = re.compile(r"shard_(\d{5,})\.csv")
# The columns of every index row before the scores (<method>.<metric>).
INDEX_COLUMNS = ["path", "name", "label", "true", "prediction", "prediction_name",
                 "probability", "target", "target_name", "target_probability", "shard", "row"]
SKIPPED_COLUMN = "skipped"


def shard_stem(shard: int) -> str:
    """``shard_00012``: the name of shard 12's files, without their suffix."""
    return f"shard_{shard:05d}"


def finished_shards(run: Path) -> set[int]:
    """The shards whose files are complete (their CSV is written last)."""
    folder = Path(run) / MAPS_FOLDER
    if not folder.is_dir():
        return set()
    return {int(match.group(1)) for path in folder.iterdir()
            if (match := SHARD_PATTERN.fullmatch(path.name))}


def encode_maps(maps: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Maps ``[N, H, W]`` as float16 maps divided by their maxima, and the maxima (float32)."""
    maps = np.asarray(maps, dtype=np.float32)
    scale = np.abs(maps).reshape(len(maps), -1).max(axis=1) if len(maps) else np.zeros(0)
    scale = np.where(scale > 0, scale, 1.0).astype(np.float32)
    return (maps / scale[:, None, None]).astype(np.float16), scale


def decode_maps(stored: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """The maps ``[N, H, W]`` (float32) back from :func:`encode_maps`' two arrays."""
    return stored.astype(np.float32) * scale[:, None, None]


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of a CSV as dicts."""
    return list(csv.DictReader(io.StringIO(path.read_text(encoding="utf-8"), newline="")))


def run_methods(run: Path) -> list[str]:
    """The methods whose maps a run keeps (its manifest says)."""
    manifest = Path(run) / MAPS_FOLDER / MANIFEST
    if not manifest.is_file():
        raise UserInputError(f"{run} is not a dataset saliency run: it has no "
                             f"{MAPS_FOLDER}/{MANIFEST}.")
    return list(json.loads(manifest.read_text())["methods"])


def iter_shards(run: Union[str, Path], methods: Optional[Iterable[str]] = None
                ) -> Iterator[tuple[list[str], dict[str, np.ndarray]]]:
    """Each written shard's paths and maps by method, one shard in memory at a time."""
    run = Path(run)
    names = list(methods) if methods is not None else run_methods(run)
    for shard in sorted(finished_shards(run)):
        with np.load(run / MAPS_FOLDER / f"{shard_stem(shard)}.npz") as stored:
            yield ([str(path) for path in stored["paths"]],
                   {name: decode_maps(stored[name], stored[f"{name}.scale"]) for name in names})


def load_maps(run: Union[str, Path], paths: Optional[Iterable[str]] = None,
              methods: Optional[Iterable[str]] = None) -> dict[str, dict[str, np.ndarray]]:
    """The maps of a dataset saliency run, by image path and then by method.

    Args:
        run: The run's folder (``runs/saliency_dataset/version_0``).
        paths: Only these images (as the index's ``path`` column gives them); only their
            shards are read. None: every image (mind the memory: 200 KB per map at 224 px).
        methods: Only these methods; None: all the run kept.

    Returns:
        ``{path: {method: map}}``, each map float32 ``[H, W]``, in the dataset's order.

    Raises:
        UserInputError: Not a dataset run, or a path it did not explain.
    """
    run = Path(run)
    names = list(methods) if methods is not None else run_methods(run)
    unknown = set(names) - set(run_methods(run))
    if unknown:
        raise UserInputError(f"{run} holds no maps of {sorted(unknown)[0]}; it has "
                             f"{', '.join(run_methods(run))}.")
    wanted = None if paths is None else list(dict.fromkeys(map(str, paths)))
    shards = sorted(finished_shards(run))
    if wanted is not None:
        where: dict[str, int] = {}
        for shard in shards:
            for row in read_rows(run / MAPS_FOLDER / f"{shard_stem(shard)}.csv"):
                if not row.get(SKIPPED):
                    where[row["path"]] = shard
        missing = [path for path in wanted if path not in where]
        if missing:
            raise UserInputError(f"{run} has no map of {missing[0]}.")
        shards = sorted({where[path] for path in wanted})
    found: dict[str, dict[str, np.ndarray]] = {}
    for shard in shards:
        with np.load(run / MAPS_FOLDER / f"{shard_stem(shard)}.npz") as stored:
            shard_paths = [str(path) for path in stored["paths"]]
            rows = [row for row, path in enumerate(shard_paths)
                    if wanted is None or path in wanted]
            decoded = {name: decode_maps(stored[name][rows], stored[f"{name}.scale"][rows])
                       for name in names}
            for position, row in enumerate(rows):
                found[shard_paths[row]] = {name: decoded[name][position] for name in names}
    if wanted is not None:
        return {path: found[path] for path in wanted}
    return found
