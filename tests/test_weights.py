"""Declared weights: hash checks, the cache, safe loading. No test downloads anything."""

from __future__ import annotations

import pickle
import urllib.error

import pytest

torch = pytest.importorskip("torch", reason="PyTorch is the optional 'rtmpose' extra")

from smartcloset.pose import weights as W  # noqa: E402


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "smartcloset" / "weights"


def mmpose_checkpoint(path, state: dict) -> None:
    """A checkpoint as MMPose writes it: {'meta': ..., 'state_dict': ...}, legacy serialisation."""
    torch.save(
        {"meta": {"epoch": 420, "mmpose_version": "1.0.0"}, "state_dict": state},
        path,
        _use_new_zipfile_serialization=False,
    )


def declared_for(path, name: str = "rtmpose-t") -> W.Weights:
    """The same declaration as ``name``, but for a file we made (its real hash in the name)."""
    real = W.get(name)
    prefix = W.sha256(path)[:8]
    return W.Weights(real.name, real.url.replace(real.sha256_prefix, prefix), real.arch, real.input_size, real.meta)


def test_every_model_is_declared_with_its_hash_and_figures():
    for name in ("rtmpose-t", "rtmpose-s", "rtmpose-m", "rtmpose-l", "rtmpose-m-384x288", "rtmpose-l-384x288"):
        w = W.get(name)
        assert w.url.startswith("https://download.openmmlab.com/mmpose/v1/projects/rtmposev1/rtmpose-")
        assert len(w.sha256_prefix) == 8 and int(w.sha256_prefix, 16) >= 0
        assert w.meta["params_m"] > 3 and 60 < w.meta["coco_val_ap"] < 80 and len(w.meta["mean"]) == 3
    assert W.get("rtmpose-m").sha256_prefix == "e48f03d0" and W.get("rtmpose-m-384x288").input_size == (288, 384)
    assert W.get("rtmdet-nano-person").sha256_prefix == "05d8511e"
    with pytest.raises(W.WeightsError, match="models list"):
        W.get("rtmpose-xxl")


def test_add_verifies_the_hash_and_loads_mmpose_layout(tmp_path, cache, monkeypatch):
    state = {"head.cls_x.weight": torch.randn(384, 256), "backbone.stem.0.conv.weight": torch.randn(12, 3, 3, 3)}
    ckpt = tmp_path / "download.pth"
    mmpose_checkpoint(ckpt, state)
    declared = declared_for(ckpt)
    monkeypatch.setitem(W.WEIGHTS, "rtmpose-t", declared)
    installed = W.add("rtmpose-t", ckpt)
    assert installed == cache / declared.filename and W.is_cached(declared)
    loaded = W.load_state_dict(declared)
    assert set(loaded) == set(state) and torch.equal(loaded["head.cls_x.weight"], state["head.cls_x.weight"])


def test_a_file_with_the_wrong_hash_is_refused(tmp_path, cache):
    ckpt = tmp_path / "other.pth"
    mmpose_checkpoint(ckpt, {"w": torch.zeros(2)})
    with pytest.raises(W.WeightsError, match="SHA-256 starts"):
        W.add("rtmpose-t", ckpt)
    assert not cache.exists() or not any(cache.iterdir())  # nothing half-installed


class Payload:
    def __reduce__(self):
        import os

        return (os.system, ("echo pwned",))


def test_a_pickle_payload_is_refused_not_run(tmp_path):
    evil = tmp_path / "evil.pth"
    with open(evil, "wb") as f:
        pickle.dump({"state_dict": {"w": Payload()}}, f)
    with pytest.raises(W.WeightsError, match="refused"):
        W.load_state_dict(evil)


def test_not_a_checkpoint(tmp_path):
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"\x00" * 100)
    with pytest.raises(W.WeightsError):
        W.load_state_dict(junk)
    with pytest.raises(W.WeightsError, match="models fetch rtmpose-s"):
        W.load_state_dict(W.get("rtmpose-s"))  # not downloaded: says how to get it


def test_fetch_offline_says_what_to_do(monkeypatch):
    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network")

    monkeypatch.setattr(W.urllib.request, "urlopen", offline)
    with pytest.raises(W.WeightsError, match="models add rtmpose-m FILE"):
        W.fetch("rtmpose-m", progress=False)


def test_an_mmpose_layout_checkpoint_loads_strictly_and_wrong_keys_are_refused(tmp_path, monkeypatch):
    from smartcloset.pose.rtmpose import build_rtmpose, rtmpose_t

    reference = build_rtmpose("t").eval()
    ckpt = tmp_path / "rtmpose-t.pth"
    mmpose_checkpoint(ckpt, reference.state_dict())
    monkeypatch.setitem(W.WEIGHTS, "rtmpose-t", declared_for(ckpt))
    W.add("rtmpose-t", ckpt)
    model = rtmpose_t(weights="rtmpose-t")
    x = torch.randn(2, 3, 256, 192)
    with torch.no_grad():
        assert all(torch.equal(a, b) for a, b in zip(model(x), reference(x)))
    assert rtmpose_t(weights=ckpt) is not None  # a file path loads too

    broken = dict(reference.state_dict())
    broken["head.extra.weight"] = torch.zeros(1)
    del broken["head.cls_x.weight"]
    bad = tmp_path / "broken.pth"
    mmpose_checkpoint(bad, broken)
    with pytest.raises(W.WeightsError, match="does not fit RTMPose-t"):
        rtmpose_t(weights=bad)
    with pytest.raises(W.WeightsError, match="not RTMPose-m"):
        from smartcloset.pose.rtmpose import rtmpose_m

        rtmpose_m(weights="rtmpose-t")
