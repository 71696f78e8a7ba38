"""Where RTMPose-m's time goes at large batches on a CUDA GPU, and which changes pay off.

The issue's goal is 60,000 crops/s at batch 256; the plain graph-replayed fp16 model gives ~23,000.
This run (one device call) measures, side by side on the same card, RTMPose-m fp16 with BatchNorm
folded, channels_last and CUDA-graph replay at batches 8 / 256 / 512:

* the kernel breakdown (torch.profiler, CUDA time per kernel name, top 25) and the time per kind
  of layer (CUDA events around every convolution, by shape class);
* variants: every cuDNN algorithm tried (``benchmark_limit = 0``), the stem's 3-channel input
  padded to 8 channels (tensor-core friendly), the depthwise convolutions run in NCHW or on
  PyTorch's own depthwise kernel, ``torch.compile`` (default; with weight freezing and 1x1
  convolutions as matmuls), and the combinations that win.

Random weights (speed does not depend on them). Prints JSON rows as it goes; writes
rtmpose-kernels.json to $OUT (or the current folder).

    PYTHONPATH=src python3 bench/rtmpose_kernels.py
"""

from __future__ import annotations

import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch
from rtmpose_gpu import SIZE, timed  # this folder's RTMPose bench (run as a script)
from torch import nn

from smartcloset.pose.rtmpose import build_rtmpose
from smartcloset.pose.rtmpose.optimize import GraphRunner, fold_batchnorm

ROWS: list[dict] = []


def record(**row) -> None:
    ROWS.append(row)
    print(json.dumps(row), flush=True)


def model_m(dtype=torch.float16) -> nn.Module:
    torch.manual_seed(0)
    model = build_rtmpose("m", SIZE).eval().cuda()
    fold_batchnorm(model)
    return model.to(dtype).to(memory_format=torch.channels_last)


class PaddedStem(nn.Module):
    """The first convolution with its 3 input channels padded to 8 with zero weights: the input
    is padded the same way, so the result is unchanged."""

    def __init__(self, conv: nn.Conv2d, channels: int = 8) -> None:
        super().__init__()
        w = conv.weight
        pad = torch.zeros((w.shape[0], channels - w.shape[1], *w.shape[2:]), dtype=w.dtype, device=w.device)
        self.conv = nn.Conv2d(channels, w.shape[0], w.shape[2:], conv.stride, conv.padding, bias=conv.bias is not None)
        self.conv = self.conv.to(device=w.device, dtype=w.dtype).to(memory_format=torch.channels_last)
        with torch.no_grad():
            self.conv.weight.copy_(torch.cat([w, pad], dim=1))
            if conv.bias is not None:
                self.conv.bias.copy_(conv.bias)
        self.channels = channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = nn.functional.pad(x, (0, 0, 0, 0, 0, self.channels - x.shape[1]))
        return self.conv(x.contiguous(memory_format=torch.channels_last))


class DepthwiseAs(nn.Module):
    """A depthwise convolution run in another layout or implementation."""

    def __init__(self, conv: nn.Conv2d, how: str) -> None:
        super().__init__()
        self.conv, self.how = conv, how
        if how == "nchw":
            self.conv = conv.to(memory_format=torch.contiguous_format)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.how == "nchw":
            return self.conv(x.contiguous()).contiguous(memory_format=torch.channels_last)
        with torch.backends.cudnn.flags(enabled=False):  # PyTorch's own depthwise kernel
            return self.conv(x)


def apply(model: nn.Module, stem8=False, dw=None) -> nn.Module:
    if stem8:
        first = model.backbone.stem[0]
        first.conv = PaddedStem(first.conv)
    if dw:
        owners = [m for m in model.modules() if isinstance(getattr(m, "conv", None), nn.Conv2d)]
        for m in owners:
            if m.conv.groups > 1 and m.conv.groups == m.conv.in_channels:
                m.conv = DepthwiseAs(m.conv, dw)
    return model


def throughput(name: str, model: nn.Module, batches=(8, 256, 512), **extra) -> None:
    runner = GraphRunner(model, (3, SIZE[1], SIZE[0]), torch.float16, max_batch=512)
    for b in batches:
        x = torch.randn(b, 3, SIZE[1], SIZE[0], device="cuda").half().contiguous(memory_format=torch.channels_last)
        with torch.no_grad():
            ms = timed(lambda r=runner, x=x: r(x))
        record(variant=name, batch=b, ms=round(ms, 3), crops_per_s=round(b / ms * 1000), **extra)
    del runner
    torch.cuda.empty_cache()


def breakdown(model: nn.Module, b: int = 256) -> None:
    """CUDA time per kernel name (profiler), and per class of convolution (events around each)."""
    x = torch.randn(b, 3, SIZE[1], SIZE[0], device="cuda").half().contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        for _ in range(3):
            model(x)
        torch.cuda.synchronize()
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CUDA]) as prof:
            for _ in range(5):
                model(x)
            torch.cuda.synchronize()
    kernels = defaultdict(float)
    for evt in prof.events():
        if evt.device_type == torch.autograd.DeviceType.CUDA:
            kernels[evt.name[:110]] += evt.device_time / 1000.0 / 5  # ms per forward
    total = sum(kernels.values())
    top = sorted(kernels.items(), key=lambda kv: -kv[1])[:25]
    record(breakdown="kernels", batch=b, total_ms=round(total, 3), top=[(k, round(v, 3)) for k, v in top])

    events: list[tuple[str, torch.cuda.Event, torch.cuda.Event]] = []

    def kind(conv: nn.Conv2d) -> str:
        k = conv.kernel_size[0]
        if conv.groups > 1:
            return f"depthwise {k}x{k}"
        if conv.in_channels == 3:
            return "stem 3->c"
        return f"conv {k}x{k}" + (" s2" if conv.stride[0] == 2 else "")

    hooks = []
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            label = kind(m)

            def pre(mod, inp, label=label):
                e = torch.cuda.Event(enable_timing=True)
                e.record()
                events.append((label, e, None))

            def post(mod, inp, out):
                label, e, _ = events[-1]
                f = torch.cuda.Event(enable_timing=True)
                f.record()
                events[-1] = (label, e, f)

            hooks += [m.register_forward_pre_hook(pre), m.register_forward_hook(post)]
    with torch.no_grad():
        model(x)
        events.clear()
        a, z = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        model(x)
        z.record()
        torch.cuda.synchronize()
    for h in hooks:
        h.remove()
    per = defaultdict(float)
    for label, e, f in events:
        per[label] += e.elapsed_time(f)
    whole = a.elapsed_time(z)
    per["everything else (activations, adds, cat, attention, head)"] = whole - sum(per.values())
    record(breakdown="layers", batch=b, forward_ms=round(whole, 3), ms={k: round(v, 3) for k, v in per.items()})


def main() -> None:
    torch.backends.cudnn.benchmark = True
    t_start = time.time()
    record(device=torch.cuda.get_device_name(), torch=torch.__version__, cudnn=torch.backends.cudnn.version())
    breakdown(model_m())
    throughput("base (fp16, folded BN, channels_last, graphs)", model_m())
    throughput("stem padded to 8 channels", apply(model_m(), stem8=True))
    throughput("depthwise in NCHW", apply(model_m(), dw="nchw"))
    throughput("depthwise on PyTorch's kernel", apply(model_m(), dw="native"))
    torch.backends.cudnn.benchmark_limit = 0  # every algorithm cuDNN has, not the first 10
    throughput("every cuDNN algorithm tried", model_m())
    throughput("every cuDNN algorithm + stem 8", apply(model_m(), stem8=True))
    import torch._inductor.config as inductor

    t0 = time.time()
    throughput("torch.compile default", torch.compile(model_m(), dynamic=False), batches=(8, 256))
    record(compile_s=round(time.time() - t0))
    inductor.freezing = True
    inductor.conv_1x1_as_mm = True
    t0 = time.time()
    throughput("torch.compile freezing + 1x1 as mm", torch.compile(model_m(), dynamic=False), batches=(8, 256))
    record(compile_s=round(time.time() - t0))
    t0 = time.time()
    throughput(
        "torch.compile freezing + 1x1 as mm + stem 8",
        torch.compile(apply(model_m(), stem8=True), dynamic=False),
        batches=(8, 256),
    )
    record(compile_s=round(time.time() - t0))
    if time.time() - t_start < 240:
        t0 = time.time()
        m = torch.compile(model_m(), dynamic=False, mode="max-autotune-no-cudagraphs")
        throughput("torch.compile max-autotune-no-cudagraphs + freezing", m, batches=(256,))
        record(compile_s=round(time.time() - t0))
    out = Path(os.environ.get("OUT", "."))
    (out / "rtmpose-kernels.json").write_text(json.dumps(ROWS, indent=1))


if __name__ == "__main__":
    main()
