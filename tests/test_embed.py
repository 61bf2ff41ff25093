import cv2
import numpy as np
import pytest
import torch
from PIL import Image

import core.model.embed
import ssl.training
from core.base.errors import ImageDecodeError, RecipeError
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import Embeddings, embed_images, embed_variants, resolve_precision, scale_sizes
from core.pixels.images import decode_image, list_images
from core.pixels.preprocess import eval_transform
from core.recipe import load_recipe
from ssl.training import trainer_precision


@pytest.fixture(scope="module")
def encoder():
    torch.manual_seed(0)
    return build_encoder(EncoderSpec(weights="none", arch="test_vit", img_size=64))


def _cfg(*overrides):
    # float32 unless a test says otherwise: "auto" is bf16 on CPUs with AVX-512/AMX, and these tests
    # compare against embed_variants' float32 default.
    return load_recipe(None, ["embed.num_workers=0", "embed.progress=false", "embed.precision=fp32", *overrides]).embed


def _asymmetric(tmp_path, n=6):
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        img = rng.integers(0, 256, (48, 80, 3), dtype=np.uint8)
        img[:, :20] = 0  # left/right asymmetry so the mirror image differs
        paths.append(tmp_path / f"im{i}.png")
        Image.fromarray(img).save(paths[-1])
        Image.fromarray(img[:, ::-1]).save(tmp_path / f"mirror{i}.png")
    return paths


def test_unit_norm_rows_names_and_raw_norms(encoder, sample_root):
    paths = list_images(sample_root / "images")
    names = [p.name for p in paths]
    emb = embed_images(encoder, paths, names, _cfg("embed.batch_size=7"))
    assert emb.names == names and emb.vectors.dtype == np.float32
    assert emb.vectors.shape == (len(paths), encoder.dim)
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    assert (emb.norms > 0).all() and not np.allclose(emb.norms, 1)


def test_progress_shows_rate_and_eta(encoder, tmp_path, capsys):
    paths = _asymmetric(tmp_path)
    embed_images(encoder, paths, [p.name for p in paths], _cfg("embed.progress=true", "embed.batch_size=2"))
    err = capsys.readouterr().err
    assert "6/6" in err and "img/s" in err and "<" in err  # tqdm: count, rate, elapsed<remaining


def test_batching_and_workers_do_not_change_results(encoder, tmp_path):
    paths = _asymmetric(tmp_path)
    a = embed_images(encoder, paths, [p.name for p in paths], _cfg("embed.batch_size=1"))
    b = embed_images(encoder, paths, [p.name for p in paths], _cfg("embed.batch_size=4", "embed.num_workers=2"))
    np.testing.assert_allclose(a.vectors, b.vectors, atol=1e-5)


def test_flip_tta_is_mirror_invariant(encoder, tmp_path):
    paths = _asymmetric(tmp_path)
    mirrors = [p.with_name(p.name.replace("im", "mirror")) for p in paths]
    plain = embed_images(encoder, paths, [p.name for p in paths], _cfg())
    plain_m = embed_images(encoder, mirrors, [p.name for p in mirrors], _cfg())
    assert np.abs(plain.vectors - plain_m.vectors).max() > 1e-3
    flip = embed_images(encoder, paths, [p.name for p in paths], _cfg("embed.flip=true"))
    flip_m = embed_images(encoder, mirrors, [p.name for p in mirrors], _cfg("embed.flip=true"))
    np.testing.assert_allclose(flip.vectors, flip_m.vectors, atol=1e-5)


def test_variants_share_one_pass_and_match_single_runs(encoder, tmp_path):
    paths = _asymmetric(tmp_path)
    names = [p.name for p in paths]
    variants = embed_variants(encoder, paths, names, poolings=("cls", "gem"), flips=(False, True),
                              num_workers=0, progress=False)
    assert set(variants) == {"cls", "cls+flip", "gem", "gem+flip"}
    single = embed_images(encoder, paths, names, _cfg("embed.flip=true"))
    np.testing.assert_allclose(variants["cls+flip"].vectors, single.vectors, atol=1e-5)


def test_turn_tta_makes_quarter_turns_invisible(encoder, tmp_path):
    paths = _asymmetric(tmp_path, n=3)
    turned = []
    for k, path in enumerate(paths):
        image = decode_image(path)
        turned.append(tmp_path / f"turned{k}.png")
        cv2.imwrite(str(turned[-1]), cv2.cvtColor(np.ascontiguousarray(np.rot90(image, k=k + 1)), cv2.COLOR_RGB2BGR))
    names = [p.name for p in paths]
    plain = [embed_images(encoder, f, names, _cfg()).vectors for f in (paths, turned)]
    tta = [embed_images(encoder, f, names, _cfg("embed.turns=[0,90,180,270]")).vectors for f in (paths, turned)]
    cos_plain, cos_tta = ((a * b).sum(1) for a, b in (plain, tta))
    assert (cos_tta > 0.999).all() and (cos_plain < 0.99).any()
    with pytest.raises(RecipeError, match="embed.turns"):
        _cfg("embed.turns=[45]")


def test_multiscale_sizes_and_output(encoder, tmp_path):
    assert scale_sizes(encoder, [1.0, 0.5, 1.3]) == [64, 32, 80]  # multiples of the 16 px patch
    paths = _asymmetric(tmp_path)
    emb = embed_images(encoder, paths, [p.name for p in paths], _cfg("embed.scales=[1.0,0.75]"))
    base = embed_images(encoder, paths, [p.name for p in paths], _cfg())
    np.testing.assert_allclose(np.linalg.norm(emb.vectors, axis=1), 1, atol=1e-5)
    assert np.abs(emb.vectors - base.vectors).max() > 1e-4


@pytest.mark.parametrize("policy", ["squash", "letterbox", "center-crop"])
def test_resize_policies(policy):
    img = np.full((40, 100, 3), 255, np.uint8)
    out = eval_transform(32, policy, (0.5, 0.5, 0.5), (0.5, 0.5, 0.5))(img)
    assert out.shape == (3, 32, 32)
    if policy == "letterbox":
        # Padding is the mean colour, i.e. zero after normalisation; the image rows are white (1.0).
        assert out[:, 0].abs().max() < 0.01 and out[:, 16].min() > 0.99
    else:
        assert out.min() > 0.99


def test_corrupt_images_stop_or_are_skipped(encoder, tmp_path):
    paths = _asymmetric(tmp_path, n=3)
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    files = [paths[0], bad, paths[1]]
    with pytest.raises(ImageDecodeError, match="bad.png"):
        embed_images(encoder, files, ["a", "bad", "b"], _cfg())
    emb = embed_images(encoder, files, ["a", "bad", "b"], _cfg(), skip_corrupt=True)
    assert emb.names == ["a", "b"] and emb.skipped == ["bad"]
    # Skipping every image is no result: zero rows would pass for an empty, "successful" run.
    with pytest.raises(ImageDecodeError, match="none of the 1 images could be decoded.*bad"):
        embed_variants(encoder, [bad], ["bad"], poolings=("cls", "cls+gem"), num_workers=0, progress=False,
                       skip_corrupt=True)


def test_a_worker_process_error_reads_as_its_own_message(encoder, tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"garbage")
    with pytest.raises(ImageDecodeError) as err:
        embed_images(encoder, [bad, bad], ["a", "b"], _cfg("embed.num_workers=2"))
    assert str(err.value).startswith(f"cannot read image {bad}") and "Traceback" not in str(err.value)


def test_save_load_round_trip(tmp_path):
    names = ["a", "line\nbreak.png"]  # any character may stand in a file name
    emb = Embeddings(names, np.eye(2, dtype=np.float32), np.array([2.0, 3.0], np.float32))
    emb.save(tmp_path / "e")
    back = Embeddings.load(tmp_path / "e")
    assert back.names == names
    np.testing.assert_array_equal(back.vectors, emb.vectors)
    np.testing.assert_array_equal(back.norms, emb.norms)
    with pytest.raises(ValueError, match="not finite"):
        Embeddings(["a"], np.array([[np.nan, 0]], np.float32), np.ones(1, np.float32))


def test_auto_precision_is_bf16_only_where_native(monkeypatch):
    cpu = torch.device("cpu")
    assert resolve_precision("fp32", cpu) == "fp32" and resolve_precision("bf16", cpu) == "bf16"
    for native in (False, True):
        for module in (core.model.embed, ssl.training):
            monkeypatch.setattr(module, "native_bf16", lambda dev, native=native: native)
        assert resolve_precision("auto", cpu) == ("bf16" if native else "fp32")
        assert trainer_precision("auto", "cpu") == ("bf16-mixed" if native else "32-true")
    assert trainer_precision("32-true", "cpu") == "32-true"
