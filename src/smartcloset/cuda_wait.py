"""How this process's threads wait for the GPU: spin on a core, or sleep until woken.

CUDA's default ("auto") spins whenever the host has more cores than the process has CUDA
contexts - on every GPU server. Each wait for a result (a pose's keypoints, an encoded frame)
then holds a whole core busy until the GPU is done. An engine waits several times a batch on
each of its batch threads, and four engine processes sharing one GPU under MPS wait at once, so
the spinning takes the cores the socket processes, the other engines' host Python and the
JPEG's host work need. "block" makes the driver put the waiting thread to sleep and wake it when
the work is done (tens of microseconds later). docs/performance.md has what it does to an H200.

Set through the driver API (``cuDevicePrimaryCtxSetFlags``) on every visible device before
torch makes its contexts, since PyTorch offers no setting for it (pytorch/pytorch#28224).
"""

from __future__ import annotations

import ctypes
import logging

log = logging.getLogger(__name__)

# CUDA's CU_CTX_SCHED_* values.
MODES = {"auto": 0, "spin": 1, "yield": 2, "block": 4}
_SCHED_MASK = 0x7


def _driver() -> ctypes.CDLL:
    return ctypes.CDLL("libcuda.so.1")


def _started(driver=None):
    """The CUDA driver, initialised; None where there is none or it does not start."""
    try:
        lib = driver if driver is not None else _driver()
    except OSError:
        return None
    return lib if lib.cuInit(0) == 0 else None


def _primary(lib, index: int) -> tuple[ctypes.c_int, int] | None:
    """Device ``index`` and its primary context's flags; None where the driver has no such device."""
    dev, flags, active = ctypes.c_int(0), ctypes.c_uint(0), ctypes.c_int(0)
    if lib.cuDeviceGet(ctypes.byref(dev), index) != 0:
        return None
    lib.cuDevicePrimaryCtxGetState(dev, ctypes.byref(flags), ctypes.byref(active))
    return dev, flags.value


def set_cuda_wait(mode: str, driver=None) -> bool:
    """Make every visible GPU's primary context wait in ``mode`` (one of ``MODES``). True when
    every device took it; False, with a warning, where there is no CUDA driver or it refused
    (the server then runs with CUDA's default). "auto" changes nothing."""
    if mode not in MODES:
        raise ValueError(f"cuda_wait must be one of {sorted(MODES)}, got {mode!r}")
    if mode == "auto":
        return True
    lib = _started(driver)
    count = ctypes.c_int(0)
    if lib is None or lib.cuDeviceGetCount(ctypes.byref(count)) != 0:
        log.warning("--cuda-wait %s: no CUDA driver here, or it did not start; left as it is", mode)
        return False
    ok = True
    for index in range(count.value):
        primary = _primary(lib, index)
        rc = (
            -1
            if primary is None
            else lib.cuDevicePrimaryCtxSetFlags_v2(primary[0], (primary[1] & ~_SCHED_MASK) | MODES[mode])
        )
        if rc != 0:
            log.warning("--cuda-wait %s: device %d refused it (CUresult %d); left as it is", mode, index, rc)
            ok = False
    if ok:
        log.info("CUDA waits: %s, on %d device(s)", mode, count.value)
    return ok


def cuda_wait_of(index: int = 0, driver=None) -> str | None:
    """The wait mode device ``index``'s primary context has (None without a driver)."""
    lib = _started(driver)
    primary = None if lib is None else _primary(lib, index)
    if primary is None:
        return None
    value = primary[1] & _SCHED_MASK
    return next((name for name, v in MODES.items() if v == value), str(value))
