"""How a thread waits for the GPU: spin, yield or sleep (the CUDA context's scheduling flag).

With one context and more cores than contexts, CUDA's default ("auto") spins: a thread waiting in
a sync keeps a core busy until the GPU answers. The batched engine syncs often - nvJPEG's
encoder once a frame - and with several engine processes, socket processes and threads on one
host, those spinning cores are taken from the work that feeds the GPU. "block" makes a waiting
thread sleep until the GPU signals it (a few microseconds later to wake); "yield" spins but
gives the core away between polls.

Set through the driver's ``cuDevicePrimaryCtxSetFlags`` (ctypes on libcuda, which PyTorch loads
anyway): since CUDA 11 it also applies to a primary context that already runs.
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# CUctx_flags: CU_CTX_SCHED_AUTO, _SPIN, _YIELD, _BLOCKING_SYNC
MODES = {"auto": 0x0, "spin": 0x1, "yield": 0x2, "block": 0x4}
_WAITS = {"spin": "spin", "yield": "spin and yield", "block": "sleep"}


def set_sync_mode(mode: str, device_index: int = 0) -> bool:
    """Set how threads of this process wait for ``device_index``; True when the driver took it.
    "auto" leaves CUDA's own choice untouched. Without a CUDA driver nothing happens (False)."""
    if mode not in MODES:
        raise ValueError(f"unknown CUDA sync mode {mode!r}: one of {', '.join(MODES)}")
    if mode == "auto":
        return False
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        log.debug("no CUDA driver: sync mode %s not set", mode)
        return False
    device = ctypes.c_int()
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGet(ctypes.byref(device), device_index) != 0:
        log.warning("CUDA driver did not initialise: sync mode %s not set", mode)
        return False
    status = cuda.cuDevicePrimaryCtxSetFlags(device, ctypes.c_uint(MODES[mode]))
    if status != 0:
        log.warning("cuDevicePrimaryCtxSetFlags(%s) failed with CUDA error %d", mode, status)
        return False
    log.info("CUDA sync mode %s: this process's threads %s while they wait for the GPU", mode, _WAITS[mode])
    return True
