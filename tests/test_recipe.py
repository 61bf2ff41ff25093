import pytest
from conftest import ROOT
from omegaconf import OmegaConf

from adapt.config import PseudolabelRecipe
from core.base.errors import RecipeError
from core.recipe import Recipe, load_recipe, parse_cli
from eval.chain import ChainRecipe
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
    shipped = {"base.yaml", "training.yaml", "hard-photos.yaml", "dino.yaml", "dino-small.yaml", "simclr.yaml",
               "distill.yaml", "pseudolabel.yaml", "zeroshot.yaml", "submission.yaml", "tiny.yaml", "chain.yaml",
               "chain-gpu.yaml", "chain-oneview.yaml"}
    assert {p.name for p in recipes} >= shipped
    schemas = {"pseudolabel": PseudolabelRecipe, "dino": PretrainRecipe, "dino-small": PretrainRecipe,
               "simclr": PretrainRecipe, "distill": PretrainRecipe, "training": PretrainRecipe,
               "hard-photos": PretrainRecipe, "chain": ChainRecipe,
               "chain-gpu": ChainRecipe, "chain-oneview": ChainRecipe}
    for path in recipes:
        cfg = load_recipe(path, schema=schemas.get(path.stem, Recipe))
        assert cfg.name == path.stem


def test_recipes_compose_from_their_defaults(tmp_path):
    (tmp_path / "base.yaml").write_text("model:\n  arch: resnet18\n  pooling: gem\nembed:\n  batch_size: 8\n")
    (tmp_path / "mid.yaml").write_text("defaults: [base]\nembed:\n  batch_size: 4\n  flip: true\n")
    (tmp_path / "top.yaml").write_text("defaults: [mid]\nmodel:\n  pooling: cls\n")
    cfg = load_recipe(tmp_path / "top.yaml", ["embed.flip=false"])
    assert (cfg.model.arch, cfg.model.pooling, cfg.embed.batch_size, cfg.embed.flip) == ("resnet18", "cls", 4, False)
    assert "defaults" not in cfg
    # The shipped stage recipes hold the model block once: in base.yaml.
    shipped = {p.stem: OmegaConf.load(p) for p in (ROOT / "recipes").glob("*.yaml")}
    assert [name for name, raw in shipped.items() if "model" in raw] in (["base", "tiny"], ["tiny", "base"])
    # ... and the hard-photo views once, in hard-photos.yaml, which SimCLR and distillation both start from.
    assert sorted(name for name, raw in shipped.items() if "hard" in raw.get("views", {})) == ["hard-photos"]
    for name in ("simclr", "distill"):
        cfg = load_recipe(ROOT / "recipes" / f"{name}.yaml", schema=PretrainRecipe)
        assert (cfg.views.hard.p, list(cfg.views.hard.low_side), cfg.tune.last_blocks) == (0.75, [64, 128], 4)
    (tmp_path / "loop.yaml").write_text("defaults: [loop2]\n")
    (tmp_path / "loop2.yaml").write_text("defaults: [loop]\n")
    with pytest.raises(RecipeError, match="lead back"):
        load_recipe(tmp_path / "loop.yaml")
    (tmp_path / "orphan.yaml").write_text("defaults: [nowhere]\n")
    with pytest.raises(RecipeError, match="nowhere.yaml does not exist"):
        load_recipe(tmp_path / "orphan.yaml")


def test_each_stage_schema_holds_only_its_own_sections():
    stage2 = load_recipe(ROOT / "recipes" / "pseudolabel.yaml", schema=PseudolabelRecipe)
    assert "dino" not in stage2 and "rounds" in stage2 and "mining" in stage2
    with pytest.raises(RecipeError, match="unknown recipe key 'dino'"):
        load_recipe(ROOT / "recipes" / "pseudolabel.yaml", ["dino.n_local=2"], PseudolabelRecipe)
    stage1 = load_recipe(ROOT / "recipes" / "dino.yaml", schema=PretrainRecipe)
    assert "rounds" not in stage1 and stage1.dino.n_local == 2
    # Shared checks run once for each schema that inherits them, the stage's own after them.
    with pytest.raises(RecipeError, match="views.global_scale"):
        load_recipe(None, ["views.global_scale=[0.9,0.1]"], PseudolabelRecipe)
    with pytest.raises(RecipeError, match="dino.local_scale"):
        load_recipe(None, ["dino.local_scale=[0,0.4]"], PretrainRecipe)

