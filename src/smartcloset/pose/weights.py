"""Model weights, declared like torchvision's: where they come from, how to check them, what
they score - and the cache, download and import that put them on this machine.

OpenMMLab names each checkpoint ``...-<8 hex>_<date>.pth``; the 8 hex digits are the start of the
file's SHA-256, so that is what we verify (torch.hub's ``check_hash`` expects another naming).
Files are loaded with ``torch.load(weights_only=True)``: a checkpoint that carries pickled code is
refused, never run.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

_RTMPOSE = "https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/"
# MMPose's data preprocessor for RTMPose: RGB, these mean/std.
MEAN = (123.675, 116.28, 103.53)
STD = (58.395, 57.12, 57.375)


class WeightsError(RuntimeError):
    """Weights that are missing, damaged or unsafe; the message says which command fixes it."""


@dataclass(frozen=True)
class Weights:
    name: str  # the name users type: ``--pose rtmpose-m``
    url: str
    arch: str  # "t" | "s" | "m" | "l" for RTMPose, "nano" for RTMDet
    input_size: tuple[int, int]  # (width, height), as in MMPose configs
    meta: dict = field(default_factory=dict, compare=False)

    @property
    def filename(self) -> str:
        return self.url.rsplit("/", 1)[-1]

    @property
    def sha256_prefix(self) -> str:
        """OpenMMLab's 8-hex suffix: the start of the file's SHA-256."""
        stem = self.filename.rsplit(".", 1)[0]
        parts = stem.split("-")
        tail = parts[-1].split("_")[0]
        return tail.lower()


def _pose(name: str, arch: str, size: tuple[int, int], suffix: str, params_m: float, coco_ap: float) -> Weights:
    res = f"{size[1]}x{size[0]}"
    return Weights(
        name,
        f"{_RTMPOSE}rtmpose-{arch}_simcc-body7_pt-body7_420e-{res}-{suffix}_20230504.pth",
        arch,
        size,
        {
            "task": "pose",
            "num_keypoints": 17,
            "params_m": params_m,
            "coco_val_ap": coco_ap,  # as published in MMPose's RTMPose README (body7 training set)
            "mean": MEAN,
            "std": STD,
            "simcc_split_ratio": 2.0,
        },
    )


WEIGHTS: dict[str, Weights] = {
    w.name: w
    for w in (
        _pose("rtmpose-t", "t", (192, 256), "026a1439", 3.34, 65.9),
        _pose("rtmpose-s", "s", (192, 256), "acd4a1ef", 5.47, 69.7),
        _pose("rtmpose-m", "m", (192, 256), "e48f03d0", 13.59, 74.9),
        _pose("rtmpose-l", "l", (192, 256), "4dba18fc", 27.66, 76.7),
        _pose("rtmpose-m-384x288", "m", (288, 384), "65e718c4", 13.72, 76.6),
        _pose("rtmpose-l-384x288", "l", (288, 384), "3f5a1437", 27.79, 78.3),
        Weights(
            "rtmdet-nano-person",
            "https://download.openmmlab.com/mmpose/v1/projects/rtmpose/rtmdet_nano_8xb32-100e_coco-obj365-person-05d8511e.pth",
            "nano",
            (320, 320),
            # MMDet's RTMDet preprocessor works in BGR: these are MEAN/STD reversed.
            {"task": "person detection", "params_m": 0.99, "mean": MEAN[::-1], "std": STD[::-1], "input": "BGR"},
        ),
    )
}


def cache_dir() -> Path:
    """``$XDG_CACHE_HOME/smartcloset/weights`` (``~/.cache/...``)."""
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "smartcloset" / "weights"


def get(name: str) -> Weights:
    try:
        return WEIGHTS[name]
    except KeyError:
        raise WeightsError(f"unknown model {name!r}; `smart-closet models list` shows them") from None


def cached_path(weights: Weights) -> Path:
    return cache_dir() / weights.filename


def is_cached(weights: Weights) -> bool:
    return cached_path(weights).is_file()


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify(path: Path, weights: Weights) -> None:
    digest = sha256(path)
    if not digest.startswith(weights.sha256_prefix):
        raise WeightsError(
            f"{path} is not {weights.filename}: its SHA-256 starts {digest[:8]}, expected {weights.sha256_prefix}"
        )


def _install(src: Path, weights: Weights) -> Path:
    """Verify ``src`` and move/copy it into the cache atomically."""
    verify(src, weights)
    dest = cached_path(weights)
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = dest.with_suffix(".part")
    shutil.copyfile(src, tmp)
    tmp.replace(dest)
    return dest


def add(name: str, file: str | Path) -> Path:
    """``models add``: import a file downloaded elsewhere, verified like a download."""
    weights = get(name)
    src = Path(file)
    if not src.is_file():
        raise WeightsError(f"{src} does not exist")
    return _install(src, weights)


def fetch(name: str, progress: bool = True, timeout: float = 30.0) -> Path:
    """``models fetch``: download with a progress bar, check the hash, cache it."""
    from tqdm import tqdm

    weights = get(name)
    if is_cached(weights):
        return cached_path(weights)
    with tempfile.TemporaryDirectory() as tmp:
        part = Path(tmp) / weights.filename
        try:
            with urllib.request.urlopen(weights.url, timeout=timeout) as resp, open(part, "wb") as out:
                total = int(resp.headers.get("Content-Length") or 0) or None
                with tqdm(total=total, unit="B", unit_scale=True, desc=name, disable=not progress) as bar:
                    for block in iter(lambda: resp.read(1 << 16), b""):
                        out.write(block)
                        bar.update(len(block))
        except (urllib.error.URLError, OSError) as exc:
            raise WeightsError(
                f"could not download {weights.url} ({exc}). Offline? Download it on another machine and run "
                f"`smart-closet models add {name} FILE`"
            ) from None
        return _install(part, weights)


def load_state_dict(source: str | Path | Weights) -> dict:
    """The tensors of a checkpoint (MMPose's ``{'meta', 'state_dict'}`` unwrapped), safely."""
    import pickle

    import torch

    if isinstance(source, Weights):
        path = cached_path(source)
        if not path.is_file():
            raise WeightsError(
                f"weights for {source.name} are not on this machine: run `smart-closet models fetch {source.name}`"
            )
        verify(path, source)
    else:
        path = Path(source)
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise WeightsError(f"{path} holds more than tensors (a pickle payload?) and is refused: {exc}") from None
    except (RuntimeError, EOFError, OSError) as exc:
        raise WeightsError(f"{path} is not a readable PyTorch checkpoint: {exc}") from None
    state = ckpt.get("state_dict", ckpt) if isinstance(ckpt, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise WeightsError(f"{path} has no state_dict of tensors")
    return state
