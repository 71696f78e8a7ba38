"""--cuda-wait: the wait mode set on every GPU's primary context through the driver API, before
torch makes its contexts; without a driver, a warning and CUDA's default."""

from __future__ import annotations

import logging
import subprocess
import sys

import pytest

from smartcloset import cuda_wait
from smartcloset.config import ServerConfig


class FakeDriver:
    """The few libcuda calls set_cuda_wait makes, over ``devices`` primary contexts' flags."""

    def __init__(self, flags: list[int], refuse: set[int] = frozenset()) -> None:
        self.flags = list(flags)
        self.refuse = refuse

    def cuInit(self, _flags):
        return 0

    def cuDeviceGetCount(self, count):
        count._obj.value = len(self.flags)
        return 0

    def cuDeviceGet(self, dev, index):
        dev._obj.value = index
        return 0

    def cuDevicePrimaryCtxGetState(self, dev, flags, active):
        flags._obj.value = self.flags[dev.value]
        active._obj.value = 0
        return 0

    def cuDevicePrimaryCtxSetFlags_v2(self, dev, flags):
        if dev.value in self.refuse:
            return 708  # CUDA_ERROR_PRIMARY_CONTEXT_ACTIVE, as old drivers answer
        self.flags[dev.value] = flags
        return 0


def test_block_sets_every_device_and_keeps_its_other_flags():
    lmem_resize = 0x10  # CU_CTX_LMEM_RESIZE_TO_MAX: not a wait flag, must survive
    driver = FakeDriver([0, lmem_resize | cuda_wait.MODES["spin"]])
    assert cuda_wait.set_cuda_wait("block", driver) is True
    assert driver.flags == [4, lmem_resize | 4]
    assert [cuda_wait.cuda_wait_of(i, driver) for i in (0, 1)] == ["block", "block"]
    assert cuda_wait.set_cuda_wait("spin", driver) and cuda_wait.cuda_wait_of(1, driver) == "spin"


def test_auto_changes_nothing_and_a_bad_mode_is_refused():
    driver = FakeDriver([1])
    assert cuda_wait.set_cuda_wait("auto", driver) is True and driver.flags == [1]
    with pytest.raises(ValueError, match="cuda_wait must be one of"):
        cuda_wait.set_cuda_wait("sleepy", driver)
    with pytest.raises(ValueError, match="cuda_wait must be auto, spin or block"):
        ServerConfig(cuda_wait="sleepy")


def test_a_refusal_or_no_driver_is_a_warning_not_a_failure(monkeypatch, caplog):
    driver = FakeDriver([0, 0], refuse={1})
    with caplog.at_level(logging.WARNING, logger="smartcloset.cuda_wait"):
        assert cuda_wait.set_cuda_wait("block", driver) is False
    assert driver.flags == [4, 0]
    assert "device 1 refused it (CUresult 708)" in caplog.text

    def missing():
        raise OSError("libcuda.so.1: cannot open shared object file")

    monkeypatch.setattr(cuda_wait, "_driver", missing)
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="smartcloset.cuda_wait"):
        assert cuda_wait.set_cuda_wait("block") is False
    assert "no CUDA driver here" in caplog.text
    assert cuda_wait.cuda_wait_of(0) is None


def test_serve_takes_cuda_wait():
    proc = subprocess.run(
        [sys.executable, "-m", "smartcloset", "serve", "--cuda-wait", "nap"], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 2 and "--cuda-wait: invalid choice: 'nap'" in proc.stderr


def test_block_holds_in_the_context_torch_makes():
    """On a real GPU: set before torch starts, the mode is the one torch's context waits in."""
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs CUDA (runs on the device machine)")
    code = (
        "from smartcloset.cuda_wait import set_cuda_wait, cuda_wait_of\n"
        "assert set_cuda_wait('block')\n"
        "import torch\n"
        "x = torch.ones(1 << 20, device='cuda'); (x * 2).sum().item()\n"
        "print(cuda_wait_of(0))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert out.stdout.strip() == "block"
