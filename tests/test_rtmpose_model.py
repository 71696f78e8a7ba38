"""Native RTMPose: architecture must match MMPose's official body7 checkpoints key-for-key."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from smartcloset.pose.rtmpose import RTMPose, build_rtmpose  # noqa: E402

# Published RTMPose parameter counts (whole model) at 256x192, in millions.
OFFICIAL_PARAMS_M = {"t": 3.34, "s": 5.47, "m": 13.59, "l": 27.66}
BACKBONE_OUT = {"t": 384, "s": 512, "m": 768, "l": 1024}
PREFIXES = {
    "backbone.stem",
    "backbone.stage1",
    "backbone.stage2",
    "backbone.stage3",
    "backbone.stage4",
    "head.final_layer",
    "head.mlp",
    "head.gau",
    "head.cls_x",
    "head.cls_y",
}


@pytest.fixture(scope="module")
def models() -> dict[str, RTMPose]:
    return {size: build_rtmpose(size).eval() for size in OFFICIAL_PARAMS_M}


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMS_M))
def test_parameter_count_matches_official(models, size):
    n = sum(p.numel() for p in models[size].parameters())
    assert round(n / 1e6, 2) == pytest.approx(OFFICIAL_PARAMS_M[size], abs=0.005)


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMS_M))
def test_output_shapes_256x192(models, size):
    with torch.no_grad():
        x, y = models[size](torch.randn(2, 3, 256, 192))
    assert x.shape == (2, 17, 384)
    assert y.shape == (2, 17, 512)


@pytest.mark.parametrize("size", ["m", "l"])
def test_output_shapes_384x288(size):
    model = build_rtmpose(size, input_size=(288, 384)).eval()
    sd = model.state_dict()
    assert sd["head.mlp.1.weight"].shape == (256, 12 * 9)
    assert sd["head.cls_x.weight"].shape == (576, 256)
    assert sd["head.cls_y.weight"].shape == (768, 256)
    with torch.no_grad():
        x, y = model(torch.randn(1, 3, 384, 288))
    assert x.shape == (1, 17, 576)
    assert y.shape == (1, 17, 768)


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMS_M))
def test_state_dict_prefixes(models, size):
    prefixes = {".".join(k.split(".")[:2]) for k in models[size].state_dict()}
    assert prefixes == PREFIXES


def test_known_mmpose_keys_and_shapes(models):
    sd = models["m"].state_dict()
    c = BACKBONE_OUT["m"]
    expected = {
        # stem: three mmcv ConvModules (conv + bn), 3 -> 24 -> 24 -> 48 channels for widen 0.75
        "backbone.stem.0.conv.weight": (24, 3, 3, 3),
        "backbone.stem.2.bn.running_var": (48,),
        # stage = [downsample ConvModule, CSPLayer]; CSPNeXtBlock: conv1 plain 3x3, conv2 depthwise-separable 5x5
        "backbone.stage1.0.conv.weight": (96, 48, 3, 3),
        "backbone.stage1.1.main_conv.conv.weight": (48, 96, 1, 1),
        "backbone.stage1.1.blocks.0.conv1.conv.weight": (48, 48, 3, 3),
        "backbone.stage1.1.blocks.1.conv2.depthwise_conv.conv.weight": (48, 1, 5, 5),
        "backbone.stage1.1.blocks.1.conv2.pointwise_conv.bn.weight": (48,),
        "backbone.stage1.1.attention.fc.weight": (96, 96, 1, 1),
        "backbone.stage1.1.attention.fc.bias": (96,),
        "backbone.stage3.1.blocks.3.conv1.bn.num_batches_tracked": (),
        # last stage = [downsample, SPPBottleneck, CSPLayer]
        "backbone.stage4.1.conv1.conv.weight": (c // 2, c, 1, 1),
        "backbone.stage4.1.conv2.conv.weight": (c, 2 * c, 1, 1),
        "backbone.stage4.2.final_conv.conv.weight": (c, c, 1, 1),
        # head
        "head.final_layer.weight": (17, c, 7, 7),
        "head.final_layer.bias": (17,),
        "head.mlp.0.g": (1,),
        "head.mlp.1.weight": (256, 48),
        "head.gau.uv.weight": (2 * 512 + 128, 256),
        "head.gau.o.weight": (256, 512),
        "head.gau.gamma": (2, 128),
        "head.gau.beta": (2, 128),
        "head.gau.ln.g": (1,),
        "head.gau.res_scale.scale": (256,),
        "head.cls_x.weight": (384, 256),
        "head.cls_y.weight": (512, 256),
    }
    for key, shape in expected.items():
        assert key in sd, key
        assert tuple(sd[key].shape) == shape, key
    # Things the body configs do NOT have: conv biases under BN, rel-pos bias, classifier biases.
    assert not any(k.endswith("conv.bias") for k in sd)
    for absent in ("head.gau.w", "head.gau.a", "head.gau.b", "head.cls_x.bias", "head.cls_y.bias", "head.mlp.1.bias"):
        assert absent not in sd
    # depth for m: round(3 * 0.67) = 2 and round(6 * 0.67) = 4 blocks
    assert (
        "backbone.stage1.1.blocks.1.conv1.conv.weight" in sd
        and "backbone.stage1.1.blocks.2.conv1.conv.weight" not in sd
    )
    assert (
        "backbone.stage2.1.blocks.3.conv1.conv.weight" in sd
        and "backbone.stage2.1.blocks.4.conv1.conv.weight" not in sd
    )


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMS_M))
def test_backbone_out_channels(models, size):
    assert models[size].backbone.out_channels == BACKBONE_OUT[size]
    assert models[size].head.final_layer.in_channels == BACKBONE_OUT[size]


def test_batchnorm_eps():
    # The RTMPose configs set norm_cfg=dict(type='SyncBN') -> PyTorch defaults (eps 1e-5, momentum 0.1),
    # overriding the CSPNeXt class default BN(eps=1e-3, momentum=0.03); both are selectable.
    for eps, momentum in ((1e-5, 0.1), (1e-3, 0.03)):
        model = build_rtmpose("t", norm_eps=eps, norm_momentum=momentum)
        bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
        assert bns
        assert all(m.eps == eps and m.momentum == momentum for m in bns)
    default_bns = [m for m in build_rtmpose("t").modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert all(m.eps == 1e-5 for m in default_bns)


@pytest.mark.parametrize("size", sorted(OFFICIAL_PARAMS_M))
def test_state_dict_round_trip_strict(models, size):
    fresh = build_rtmpose(size)
    result = fresh.load_state_dict(models[size].state_dict(), strict=True)
    assert not result.missing_keys and not result.unexpected_keys
    for (k, a), b in zip(fresh.state_dict().items(), models[size].state_dict().values()):
        assert torch.equal(a, b), k


def test_batch_invariance_eval(models):
    torch.manual_seed(0)
    model = models["s"]
    batch = torch.randn(4, 3, 256, 192)
    with torch.no_grad():
        bx, by = model(batch)
        for i in range(4):
            sx, sy = model(batch[i : i + 1])
            torch.testing.assert_close(bx[i : i + 1], sx, atol=1e-5, rtol=0)
            torch.testing.assert_close(by[i : i + 1], sy, atol=1e-5, rtol=0)


@pytest.mark.parametrize("bad", [{"size": "x"}, {"size": "m", "input_size": (190, 256)}])
def test_bad_arguments(bad):
    with pytest.raises(ValueError):
        build_rtmpose(**bad)


def test_folding_batchnorm_keeps_the_outputs():
    from smartcloset.pose.rtmpose.optimize import fold_batchnorm

    model = build_rtmpose("t").eval()
    with torch.no_grad():  # give the BNs non-trivial statistics, as trained ones have
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
                m.weight.uniform_(0.5, 1.5)
                m.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        ref = model(x)
        folded = fold_batchnorm(model)
        out = folded(x)
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    for a, b in zip(out, ref):
        assert (a - b).norm() / b.norm() < 1e-4


def test_spp_cascaded_pools_equal_mmpose_pools():
    """SPP computes pools 9 and 13 as pool 5 applied again (stride 1, -inf padding): the maps equal
    MMPose's three separate pools exactly, on values with ties and negatives too."""
    from smartcloset.pose.rtmpose.model import SPPBottleneck

    torch.manual_seed(0)
    spp = SPPBottleneck(32, (1e-5, 0.1)).eval()
    assert spp._cascade
    for x in (torch.randn(2, 32, 8, 6), torch.randint(-3, 3, (1, 32, 12, 9)).float()):
        with torch.no_grad():
            cascaded = spp(x)
            spp._cascade = False
            separate = spp(x)
            spp._cascade = True
        assert torch.equal(cascaded, separate)
    assert not SPPBottleneck(32, (1e-5, 0.1), kernel_sizes=(3, 7))._cascade  # 7 != 2 * 3 - 1
