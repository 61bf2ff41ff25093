import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from adapt.config import PseudolabelRecipe
from core.errors import RecipeError
from core.recipe import Recipe, load_recipe, parse_cli
from ssl.config import PretrainRecipe


def test_yaml_then_overrides(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  arch: resnet18\n  pooling: gem\n")
    cfg = load_recipe(path, ["model.pooling=cls+gem", "embed.scales=[1.0,0.75]", "data.labeled=[a,b]"])
    assert cfg.model.arch == "resnet18"
    assert cfg.model.pooling == "cls+gem"
    assert list(cfg.embed.scales) == [1.0, 0.75]
    assert list(cfg.data.labeled) == ["a", "b"]
    assert cfg.embed.batch_size == 32  # schema default kept


def test_unknown_key_lists_valid_keys(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text("model:\n  archh: resnet18\n")
    with pytest.raises(RecipeError) as err:
        load_recipe(path)
    message = str(err.value)
    assert "archh" in message and str(path) in message
    assert "model.arch" in message and "embed.flip" in message and "data.labeled" in message


def test_unknown_override_and_bad_values():
    with pytest.raises(RecipeError, match="embed.fllip"):
        load_recipe(None, ["embed.fllip=true"])
    with pytest.raises(RecipeError, match="squash, letterbox, center-crop"):
        load_recipe(None, ["model.resize=stretch"])
    with pytest.raises(RecipeError, match="embed.batch_size"):
        load_recipe(None, ["embed.batch_size=many"])
    with pytest.raises(RecipeError, match="key=value"):
        parse_cli(["recipes/tiny.yaml", "flip"], "prog", "desc")
    with pytest.raises(RecipeError, match="not found"):
        load_recipe(ROOT / "recipes" / "nope.yaml")


def test_shared_location_from_environment(monkeypatch):
    monkeypatch.setenv("CURATOR_SHARED", "/elsewhere/shared")
    cfg = load_recipe(ROOT / "recipes" / "zeroshot.yaml")
    assert cfg.model.weights.startswith("/elsewhere/shared/weights/")
    monkeypatch.delenv("CURATOR_SHARED")
    assert load_recipe(ROOT / "recipes" / "zeroshot.yaml").model.weights.startswith("../shared/weights/")


def test_model_file_instead_of_recipe():
    cfg = parse_cli(["enc.pt", "embed.flip=true"], "prog", "desc", accept_model_file=True)
    assert cfg.model.weights == "enc.pt" and cfg.embed.flip is True


def test_every_shipped_recipe_loads_with_its_schema():
    recipes = sorted((ROOT / "recipes").glob("*.yaml"))
    shipped = {"dino.yaml", "simclr.yaml", "pseudolabel.yaml", "zeroshot.yaml", "submission.yaml", "tiny.yaml"}
    assert {p.name for p in recipes} >= shipped
    for path in recipes:
        raw = OmegaConf.load(path)
        schema = PseudolabelRecipe if "rounds" in raw else PretrainRecipe if "method" in raw else Recipe
        cfg = load_recipe(path, schema=schema)
        assert cfg.name == path.stem
