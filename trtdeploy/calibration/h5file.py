"""The calibration data file, in MMDeploy's HDF5 layout: ``calib_data/end2end/<input name>/<index>``.

Each dataset holds one model input of one sample with its batch dimension (``(1, C, H, W)``),
so a file MMDeploy wrote is read here unchanged and a file written here is read by MMDeploy.
trtdeploy adds a ``fingerprint`` attribute that says which images and pipeline made it.

Each sample is one chunk, with HDF5's gzip filter as MMDeploy stores them (``calib_config.compression
='gzip'``, the default) at level 1 where MMDeploy uses 4 (4 took about twice the CPU for files ~25 %
smaller), or raw (``'none'``: about 10 MB a 1333x800 image, and no faster here, since the main
process then receives and writes every byte). ``encode_sample`` makes a chunk's bytes exactly as
that filter would, so the loader's worker processes compress beside the decoding and the writer
only copies finished chunks into the file (``write_direct_chunk``): any HDF5 reader (MMDeploy's
h5py) reads both kinds as usual.
"""
from __future__ import annotations

import os
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator

import numpy as np

from ..errors import DatasetError
from ..utils.fileio import atomic_write

ROOT_GROUP = "calib_data"
PARTITION = "end2end"


class CalibrationFile:
    """Read access to a calibration file; opening checks the layout (DatasetError when broken)."""

    def __init__(self, path: str | os.PathLike):
        import h5py

        self.path = Path(path)
        try:
            self._h5 = h5py.File(self.path, "r")
        except (OSError, ValueError) as e:
            raise DatasetError(f"{self.path} is not a readable HDF5 file ({e})") from None
        group = self._h5.get(f"{ROOT_GROUP}/{PARTITION}")
        if group is None or not len(group):
            self.close()
            raise DatasetError(f"{self.path} has no {ROOT_GROUP}/{PARTITION}/<input name> groups "
                               f"(the MMDeploy calibration layout)")
        self._inputs = {name: group[name] for name in group}
        counts = {name: len(g) for name, g in self._inputs.items()}
        if len(set(counts.values())) != 1 or not next(iter(counts.values())):
            self.close()
            raise DatasetError(f"{self.path}: inputs hold different or zero sample counts {counts}")
        self._count = next(iter(counts.values()))
        for name, g in self._inputs.items():
            missing = [str(i) for i in range(self._count) if str(i) not in g]
            if missing:
                self.close()
                raise DatasetError(f"{self.path}: {ROOT_GROUP}/{PARTITION}/{name} lacks samples {missing[:5]}")

    @property
    def input_names(self) -> list[str]:
        return list(self._inputs)

    @property
    def fingerprint(self) -> str | None:
        value = self._h5.attrs.get("fingerprint")
        return value.decode() if isinstance(value, bytes) else value

    def __len__(self) -> int:
        return self._count

    def shapes(self, name: str) -> list[tuple[int, ...]]:
        return [tuple(self._inputs[name][str(i)].shape) for i in range(self._count)]

    def sample(self, index: int) -> dict[str, np.ndarray]:
        try:
            return {name: np.asarray(g[str(index)][...], dtype=np.float32) for name, g in self._inputs.items()}
        except (OSError, ValueError, KeyError) as e:
            raise DatasetError(f"{self.path}: sample {index} cannot be read ({e}); delete the file to collect it again") from None

    def __iter__(self) -> Iterator[dict[str, np.ndarray]]:
        for i in range(self._count):
            yield self.sample(i)

    def check_readable(self) -> None:
        """Read every sample once: a truncated file fails here rather than halfway through a build."""
        for i in range(self._count):
            self.sample(i)

    def close(self) -> None:
        self._h5.close()

    def __enter__(self) -> "CalibrationFile":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


GZIP_LEVEL = 1
COMPRESSIONS = ("none", "gzip")


@dataclass(frozen=True)
class EncodedSample:
    """One float32 sample (NCHW) as the bytes of a one-chunk HDF5 dataset with the gzip filter."""

    shape: tuple[int, ...]
    data: bytes


def encode_sample(arr: np.ndarray, compression: str = "gzip") -> np.ndarray | EncodedSample:
    """One sample (CHW or NCHW) as ``write_calibration_file`` stores it: NCHW float32, gzip-compressed or raw."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    arr = arr[None] if arr.ndim == 3 else arr
    return EncodedSample(tuple(arr.shape), zlib.compress(arr.data, GZIP_LEVEL)) if compression == "gzip" else arr


def write_calibration_file(path: str | os.PathLike, input_name: str,
                           samples: Iterable[np.ndarray | EncodedSample], fingerprint: str) -> int:
    """Write samples atomically (arrays CHW or NCHW are stored raw; ``encode_sample``'s gzip ones as they
    are); returns how many were written."""
    import h5py

    count = 0
    with atomic_write(path, "w+b") as f, h5py.File(f, "w") as h5:
        h5.attrs["fingerprint"] = fingerprint
        group = h5.create_group(f"{ROOT_GROUP}/{PARTITION}/{input_name}")
        for sample in samples:
            if isinstance(sample, EncodedSample):
                dataset = group.create_dataset(str(count), shape=sample.shape, dtype=np.float32, chunks=sample.shape,
                                               compression="gzip", compression_opts=GZIP_LEVEL)
                dataset.id.write_direct_chunk((0,) * len(sample.shape), sample.data)
            else:
                group.create_dataset(str(count), data=encode_sample(sample, "none"))
            count += 1
    return count
