"""Would fused convolution epilogues reach RTMPose-m's 60,000 crops/s? Per layer at batch 256:
PyTorch's convolution (BatchNorm folded, with its bias) + SiLU against one cuDNN graph
(conv_fprop -> bias -> swish, fp32 inside) built with the ``nvidia-cudnn-frontend`` wheel, and
the convolution alone - what no epilogue can go below.

Every ConvBNAct layer shape of RTMPose-m (fp16, channels_last, random weights) is timed with its
own input, CUDA events over 30 runs; the sums weigh each shape by how often the network runs it.
Needs ``pip install nvidia-cudnn-frontend`` (an experiment, not a project dependency). Prints one
JSON row per layer shape and the sums last.

    PYTHONPATH=src python3 bench/rtmpose_cudnn.py [--batch 256] [--all-plans]
"""

from __future__ import annotations

import argparse
import json
from collections import Counter

import torch
import torch.nn.functional as F

from smartcloset.pose.rtmpose import build_rtmpose
from smartcloset.pose.rtmpose.model import ConvBNAct
from smartcloset.pose.rtmpose.optimize import fold_batchnorm


def cuda_ms(fn, runs: int = 30) -> float:
    """Mean time of ``fn`` on the GPU (CUDA events around ``runs`` calls, after 5 warm-ups)."""
    for _ in range(5):
        fn()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(runs):
        fn()
    end.record()
    torch.cuda.synchronize()
    return start.elapsed_time(end) / runs


def layer_shapes(model, batch: int) -> tuple[Counter, dict]:
    """(input shape, conv settings) of every ConvBNAct the network runs, counted; and a conv of each."""
    shapes: Counter = Counter()
    convs = {}

    def hook(module, inputs, _):
        c = module.conv
        key = (tuple(inputs[0].shape), c.out_channels, c.kernel_size[0], c.stride[0], c.padding[0], c.groups)
        shapes[key] += 1
        convs[key] = c

    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, ConvBNAct)]
    x = torch.randn(batch, 3, 256, 192, device="cuda", dtype=torch.half).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        model(x)
    for h in hooks:
        h.remove()
    return shapes, convs


def fused_graph(cudnn, handle, x, w, b, stride: int, pad: int):
    """conv -> bias -> swish as one cuDNN graph; returns a callable and its output tensor."""
    g = cudnn.pygraph(
        io_data_type=cudnn.data_type.HALF,
        intermediate_data_type=cudnn.data_type.FLOAT,
        compute_data_type=cudnn.data_type.FLOAT,
        handle=handle,
    )
    X = g.tensor(name="X", dim=x.size(), stride=x.stride(), data_type=cudnn.data_type.HALF)
    W = g.tensor(name="W", dim=w.size(), stride=w.stride(), data_type=cudnn.data_type.HALF)
    B = g.tensor(name="B", dim=b.size(), stride=b.stride(), data_type=cudnn.data_type.HALF)
    y = g.conv_fprop(image=X, weight=W, padding=[pad, pad], stride=[stride, stride], dilation=[1, 1])
    Y = g.swish(name="swish", input=g.bias(name="bias", input=y, bias=B), swish_beta=1.0)
    Y.set_output(True).set_data_type(cudnn.data_type.HALF)
    g.validate()
    g.build_operation_graph()
    g.create_execution_plans([cudnn.heur_mode.A, cudnn.heur_mode.FALLBACK])
    g.check_support()
    g.build_plans(cudnn.build_plan_policy.ALL)
    workspace = torch.empty(g.get_workspace_size(), device="cuda", dtype=torch.uint8)
    n, _, h, wd = x.shape
    k = w.shape[2]
    out = torch.empty(
        (n, w.shape[0], (h + 2 * pad - k) // stride + 1, (wd + 2 * pad - k) // stride + 1),
        device="cuda",
        dtype=torch.half,
    ).contiguous(memory_format=torch.channels_last)
    pack = {X: x, W: w, B: b, Y: out}
    return g, pack, workspace, out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--all-plans", action="store_true", help="also time every plan cuDNN offers (slow)")
    args = ap.parse_args()
    import cudnn  # nvidia-cudnn-frontend

    torch.backends.cudnn.benchmark = True
    torch.manual_seed(0)
    model = fold_batchnorm(build_rtmpose("m", (192, 256)).eval().cuda()).half().to(memory_format=torch.channels_last)
    x = torch.randn(args.batch, 3, 256, 192, device="cuda", dtype=torch.half).contiguous(
        memory_format=torch.channels_last
    )
    with torch.no_grad():
        whole = cuda_ms(lambda: model(x), 20)
    shapes, convs = layer_shapes(model, args.batch)
    print(
        json.dumps(
            {
                "device": torch.cuda.get_device_name(),
                "cudnn": cudnn.backend_version(),
                "batch": args.batch,
                "model_ms": round(whole, 3),
                "layers": sum(shapes.values()),
                "shapes": len(shapes),
            }
        ),
        flush=True,
    )
    handle = cudnn.create_handle()
    cudnn.set_stream(handle=handle, stream=torch.cuda.current_stream().cuda_stream)
    sums = Counter()
    for key, count in shapes.items():
        shape, cout, k, stride, pad, groups = key
        conv = convs[key]
        xi = torch.randn(shape, device="cuda", dtype=torch.half).contiguous(memory_format=torch.channels_last)
        w, b = conv.weight.detach(), conv.bias.detach()
        with torch.no_grad():
            ref = F.silu(F.conv2d(xi, w, b, stride, pad, 1, groups))
            torch_ms = cuda_ms(lambda: F.silu(F.conv2d(xi, w, b, stride, pad, 1, groups)))  # noqa: B023
            conv_ms = cuda_ms(lambda: F.conv2d(xi, w, None, stride, pad, 1, groups))  # noqa: B023
        row = {
            "input": shape,
            "out": cout,
            "k": k,
            "stride": stride,
            "groups": groups,
            "count": count,
            "torch_conv_bias_silu_ms": round(torch_ms, 4),
            "conv_only_ms": round(conv_ms, 4),
        }
        fused_ms = torch_ms
        try:
            bias = b.view(1, -1, 1, 1).contiguous(memory_format=torch.channels_last)
            g, pack, ws, out = fused_graph(cudnn, handle, xi, w, bias, stride, pad)
            g.execute(pack, ws, handle=handle)
            torch.cuda.synchronize()
            row["max_abs_diff"] = float((out.float() - ref.float()).abs().max())
            fused_ms = cuda_ms(lambda: g.execute(pack, ws, handle=handle))  # noqa: B023
            if args.all_plans:
                for i in range(g.get_execution_plan_count()):
                    fused_ms = min(fused_ms, cuda_ms(lambda: g.execute_plan_at_index(pack, ws, i, handle=handle), 10))  # noqa: B023
            row["cudnn_fused_ms"] = round(fused_ms, 4)
        except Exception as exc:  # a shape the graph API does not take: PyTorch's time stands
            row["cudnn_error"] = str(exc)[:300]
        sums["torch"] += count * torch_ms
        sums["conv_only"] += count * conv_ms
        sums["fused_or_torch"] += count * min(fused_ms, torch_ms)
        print(json.dumps(row), flush=True)
    print(json.dumps({f"sum_{k}_ms": round(v, 3) for k, v in sums.items()}), flush=True)


if __name__ == "__main__":
    main()
