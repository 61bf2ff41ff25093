import pytest
import timm
import torch
from safetensors.torch import save_file

from core.base.errors import MissingInputError, RecipeError
from core.model.backbone import EncoderSpec, build_encoder, load_encoder


@pytest.mark.parametrize("arch,pooling,dim", [
    ("test_vit", "cls", 64), ("test_vit", "gem", 64), ("test_vit", "cls+gem", 128),
    ("test_resnet", "cls", None), ("test_resnet", "gem", None)])
def test_poolings_shapes(arch, pooling, dim):
    encoder = build_encoder(EncoderSpec(weights="none", arch=arch, pooling=pooling, img_size=64))
    out = encoder(torch.randn(2, 3, 64, 64))
    assert out.shape == (2, encoder.dim)
    if dim:
        assert encoder.dim == dim
    assert torch.isfinite(out).all()


def test_cls_is_the_class_token_and_gem_ignores_it():
    encoder = build_encoder(EncoderSpec(weights="none", arch="test_vit", pooling="cls", img_size=64))
    x = torch.randn(1, 3, 64, 64)
    feats = encoder.model.forward_features(x)
    torch.testing.assert_close(encoder(x), feats[:, 0])
    patches = feats[:, encoder.model.num_prefix_tokens:].clamp(min=1e-6)
    torch.testing.assert_close(encoder.pool(feats, "gem"), patches.pow(3).mean(1).pow(1 / 3))


@pytest.mark.parametrize("arch,side", [("vit_small_patch14_reg4_dinov2", 56), ("vit_small_patch16_dinov3", 64)])
def test_bigger_families_build_and_pool_past_their_register_tokens(arch, side):
    # The families README's "Bigger backbones" lists: registers are prefix tokens, which GeM must skip.
    encoder = build_encoder(EncoderSpec(weights="none", arch=arch, pooling="gem", img_size=side))
    assert encoder.model.num_prefix_tokens == 5 and encoder.dim == 384
    x = torch.randn(2, 3, side, side)
    patches = encoder.model.forward_features(x)[:, 5:].clamp(min=1e-6)
    torch.testing.assert_close(encoder(x), patches.pow(3).mean(1).pow(1 / 3))


def test_input_settings_from_pretrained_config():
    encoder = build_encoder(EncoderSpec(weights="none", arch="test_vit"))
    cfg = timm.get_pretrained_cfg("test_vit")
    assert encoder.img_size == cfg.input_size[-1]
    assert encoder.spec.mean == tuple(cfg.mean) and encoder.spec.std == tuple(cfg.std)


def test_local_timm_weights_file(tmp_path):
    reference = timm.create_model("test_vit", pretrained=False, num_classes=0)
    save_file(reference.state_dict(), tmp_path / "w.safetensors")
    encoder = build_encoder(EncoderSpec(arch="test_vit", weights=str(tmp_path / "w.safetensors")))
    x = torch.randn(2, 3, 160, 160)
    torch.testing.assert_close(encoder(x), reference.eval()(x))


def test_encoder_file_round_trip(tmp_path):
    encoder = build_encoder(EncoderSpec(weights="none", arch="test_vit", pooling="cls+gem", img_size=64))
    with torch.no_grad():
        encoder.gem.p.fill_(4.0)
    encoder.save(tmp_path / "enc.pt")
    # The file carries its architecture: the spec's arch is not needed to load it.
    loaded = build_encoder(EncoderSpec(arch="ignored", weights=str(tmp_path / "enc.pt"), resize="letterbox"))
    assert loaded.spec.pooling == "cls+gem" and loaded.img_size == 64 and loaded.spec.resize == "letterbox"
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(loaded(x), encoder(x))
    assert load_encoder(tmp_path / "enc.pt").spec.arch == "test_vit"
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    with pytest.raises(MissingInputError, match="other.pt is not a Curator encoder file"):
        load_encoder(tmp_path / "other.pt")


def test_weights_errors_name_the_fix(tmp_path):
    with pytest.raises(MissingInputError, match="neither 'hub', 'none' nor an existing file"):
        build_encoder(EncoderSpec(arch="test_vit", weights=str(tmp_path / "missing.safetensors")))
    with pytest.raises(RecipeError, match="not a timm model.*test_vit"):
        build_encoder(EncoderSpec(weights="none", arch="test_vi"))
    # timm alone would load these non-strictly and hand back a silently random model.
    save_file({"nonsense": torch.zeros(3)}, tmp_path / "bad.safetensors")
    with pytest.raises(MissingInputError, match=r"bad.safetensors lacks 78 of the model's weights"):
        build_encoder(EncoderSpec(arch="test_vit", weights=str(tmp_path / "bad.safetensors")))
    other = timm.create_model("test_vit", pretrained=False, num_classes=0).state_dict()
    other["norm.weight"] = torch.ones(5)
    save_file(other, tmp_path / "other.safetensors")
    with pytest.raises(MissingInputError, match="could not load model.weights=.*other.safetensors into test_vit"):
        build_encoder(EncoderSpec(arch="test_vit", weights=str(tmp_path / "other.safetensors")))


def test_hub_weights_go_through_timm(monkeypatch):
    calls = []
    real = timm.create_model

    def spy(name, pretrained=False, **kwargs):
        calls.append(pretrained)
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", spy)
    build_encoder(EncoderSpec(arch="test_vit", weights="hub"))
    assert calls == [True]


def test_shared_dinov2_loads(shared):
    encoder = build_encoder(EncoderSpec(
        arch="vit_small_patch14_dinov2", img_size=224,
        weights=str(shared / "weights" / "vit_small_patch14_dinov2.imgfocus.safetensors")))
    assert encoder.dim == 384 and encoder.size_multiple == 14
    assert encoder(torch.randn(1, 3, 224, 224)).shape == (1, 384)
