import pytest
import torch

from core.base.errors import RecipeError
from core.model.backbone import EncoderSpec, build_encoder
from ssl.tuning import TuneConfig, configure_tuning, layer_groups, merged_copy, param_groups

SPEC = EncoderSpec(weights="none", arch="test_vit", img_size=32)


def _trainable(encoder) -> set[str]:
    return {n for n, p in encoder.named_parameters() if p.requires_grad}


def test_last_blocks_trains_only_the_top_groups_with_decayed_rates():
    encoder = configure_tuning(build_encoder(SPEC), TuneConfig(mode="last-blocks", last_blocks=2))
    groups = layer_groups(encoder.model)
    top = {f"model.{n}" for g in groups[-2:] for n in g}
    assert _trainable(encoder) == top
    assert any(n.startswith("model.norm") for n in top)  # the final norm trains with the last block
    rates = sorted({g["lr"] for g in param_groups(encoder, 1e-3, 0.05, 0.5)})
    assert rates == pytest.approx([5e-4, 1e-3])


def test_head_mode_adds_an_identity_projection_and_freezes_the_backbone(tmp_path):
    base = build_encoder(SPEC)
    x = torch.randn(2, 3, 32, 32)
    encoder = configure_tuning(base, TuneConfig(mode="head"))
    assert _trainable(encoder) == {"proj.weight", "proj.bias"}
    assert torch.allclose(encoder(x), base(x), atol=1e-6)
    with torch.no_grad():
        encoder.proj.weight.mul_(2.0)
    encoder.save(tmp_path / "head.pt")
    reloaded = build_encoder(EncoderSpec(arch="unused", weights=str(tmp_path / "head.pt")))
    assert reloaded.spec.proj and torch.allclose(reloaded(x), 2 * base(x), atol=1e-5)


def test_lora_trains_adapters_only_and_merges_into_a_plain_model(tmp_path):
    encoder = configure_tuning(build_encoder(SPEC), TuneConfig(mode="lora", last_blocks=1, lora_rank=2))
    trainable = _trainable(encoder)
    assert trainable and all("lora_" in n for n in trainable)
    with torch.no_grad():
        for n, p in encoder.named_parameters():
            if "lora_B" in n:
                p.normal_()
    x = torch.randn(2, 3, 32, 32)
    merged = merged_copy(encoder)
    assert not any("lora" in n for n in merged.state_dict())
    assert torch.allclose(merged(x), encoder.eval()(x), atol=1e-4)
    merged.save(tmp_path / "enc.pt")
    reloaded = build_encoder(EncoderSpec(arch="unused", weights=str(tmp_path / "enc.pt")))
    assert torch.allclose(reloaded(x), merged(x), atol=1e-5)


def test_bad_tuning_settings_are_named():
    with pytest.raises(RecipeError, match="last_blocks=99"):
        configure_tuning(build_encoder(SPEC), TuneConfig(last_blocks=99))
    with pytest.raises(RecipeError, match="tune.mode"):
        configure_tuning(build_encoder(SPEC), TuneConfig(mode="all"))
