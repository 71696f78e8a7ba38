"""The closet on disk: the starter garments shipped in the package plus the user's own folder."""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from .garment import Garment, GarmentError, load_garment

log = logging.getLogger(__name__)

STARTER_DIR = Path(__file__).with_name("starter")
DEFAULT_GARMENT = "tshirt-navy"


def default_closet_dir() -> Path:
    """The user's closet: ``$XDG_DATA_HOME/smartcloset/closet`` (``~/.local/share/...``)."""
    base = os.environ.get("XDG_DATA_HOME") or os.path.join(os.path.expanduser("~"), ".local", "share")
    return Path(base) / "smartcloset" / "closet"


class Closet:
    """Garments by id. The user's folder wins over the starter set when ids collide.

    A broken garment file is logged and skipped - one bad file must not empty the closet.
    """

    def __init__(self, user_dir: str | Path | None = None, include_starter: bool = True) -> None:
        self.user_dir = Path(user_dir) if user_dir else default_closet_dir()
        self.include_starter = include_starter
        self._lock = threading.Lock()
        self._garments: dict[str, Garment] = {}
        self.errors: list[str] = []
        self.reload()

    def reload(self) -> None:
        found: dict[str, Garment] = {}
        errors: list[str] = []
        folders = ([STARTER_DIR] if self.include_starter else []) + [self.user_dir]
        for folder in folders:
            if not folder.is_dir():
                continue
            for sidecar in sorted(folder.glob("*.json")):
                try:
                    g = load_garment(sidecar)
                except GarmentError as exc:
                    errors.append(str(exc))
                    log.warning("skipping garment: %s", exc)
                    continue
                found[g.id] = g
        with self._lock:
            self._garments = found
            self.errors = errors

    def list(self) -> list[Garment]:
        with self._lock:
            return sorted(self._garments.values(), key=lambda g: (g.layer, g.id))

    def get(self, garment_id: str) -> Garment:
        with self._lock:
            try:
                return self._garments[garment_id]
            except KeyError:
                raise KeyError(f"no garment {garment_id!r} in the closet") from None

    def __contains__(self, garment_id: str) -> bool:
        with self._lock:
            return garment_id in self._garments
