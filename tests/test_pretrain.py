import json

import pytest
import pytorch_lightning as pl
import torch

from core.base.runs import RunDir
from core.data.pool import recipe_pool
from core.model.backbone import EncoderSpec, build_encoder, load_encoder
from core.model.embed import embed_images
from core.pixels.images import decode_image
from core.recipe import load_recipe
from ssl.augment import view_maker
from ssl.config import PretrainRecipe
from ssl.methods import METHODS
from ssl.pretrain import TARGETS_DIR, distill_targets, pretrain
from ssl.tuning import configure_tuning
from tests.conftest import ROOT, run_cli, run_main

TINY = ["model.arch=test_vit", "model.weights=none", "model.img_size=32", "views.global_size=32",
        "dino.local_size=16", "dino.n_local=2", "views.max_side=96", "train.batch_size=8", "train.num_workers=0",
        "embed.num_workers=0", "embed.progress=false", "embed.precision=fp32", "synthetic.num_queries=10",
        "trainer.precision=32-true", "train.lr=3e-4", "train.head_lr=1e-3", "train.warmup_epochs=0"]


def _recipe(method: str, tmp_path, sample_root, *overrides: str):
    return load_recipe(ROOT / "recipes" / f"{method}.yaml",
                       [*TINY, f"data.labeled=[{sample_root}]", f"run_dir={tmp_path / method}", *overrides],
                       PretrainRecipe)


def _module_and_batch(method: str, recipe):
    """A fresh module of ``method`` (seeded) and one batch of its views of 8 pool images."""
    pl.seed_everything(0, verbose=False)
    encoder = configure_tuning(build_encoder(EncoderSpec.from_config(recipe.model)), recipe.tune)
    pool = recipe_pool(recipe)
    targets = (torch.randn(len(pool), encoder.dim),) if method == "distill" else ()  # per-image targets
    module = METHODS[method](encoder, recipe, *targets)
    views = view_maker(recipe, encoder.spec.mean, encoder.spec.std)
    batch = [torch.stack(v) for v in zip(*(views(decode_image(p), seed=i) for i, p in enumerate(pool.paths[:8])),
                                         strict=True)]
    return module, batch + ([torch.arange(8)] if module.needs_index else [])


@pytest.mark.parametrize("method, extra", [*((m, ()) for m in sorted(METHODS)), ("dino", ("dino.centering=sinkhorn",))])
def test_steps_lower_the_loss_of_a_batch(method, extra, tmp_path, sample_root):
    recipe = _recipe(method, tmp_path, sample_root, "train.head_warmup_epochs=0", *extra)
    module, batch = _module_and_batch(method, recipe)
    centre = module.criterion.center.clone() if method == "dino" else None
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)

    def loss() -> torch.Tensor:
        if centre is not None:  # the same teacher centring every time: only the student moves
            module.criterion.center.copy_(centre)
        return module.loss(batch)

    def value() -> float:
        with torch.no_grad():
            return float(loss())

    before = value()
    for _ in range(5):
        optimizer.zero_grad()
        loss().backward()
        optimizer.step()
    assert value() < before - 0.05


def test_sinkhorn_centring_spreads_a_batch_that_softmax_sends_to_one_prototype(tmp_path, sample_root):
    recipe = _recipe("dino", tmp_path, sample_root, "dino.centering=sinkhorn", "dino.out_dim=16",
                     "dino.teacher_temp=0.04", "dino.warmup_teacher_temp=0.04")
    module = METHODS["dino"](build_encoder(EncoderSpec.from_config(recipe.model)), recipe)
    torch.manual_seed(0)
    teacher = torch.zeros(8, 16)
    teacher[:, 0] = 1.0  # every image's best prototype is 0
    teacher[:, 1:] = 0.5 + 0.2 * torch.rand(8, 15)
    assert set((teacher / 0.04).softmax(1).argmax(1).tolist()) == {0}
    q = module.criterion.targets(teacher, 0.04)
    assert torch.allclose(q.sum(1), torch.ones(8)) and len(set(q.argmax(1).tolist())) >= 6
    # The loss is the cross-entropy of each other student view against those targets.
    student = [torch.zeros(8, 16), torch.randn(8, 16), torch.randn(8, 16)]
    by_hand = torch.stack([-(q * (s / 0.1).log_softmax(1)).sum(1).mean() for s in student[1:]]).mean()
    assert float(module.criterion([teacher], student, epoch=0)) == pytest.approx(float(by_hand), rel=1e-5)


def test_koleo_spreads_the_features_that_retrieval_uses(tmp_path, sample_root):
    recipe = _recipe("dino", tmp_path, sample_root, "train.head_warmup_epochs=0", "dino.koleo_weight=1.0")
    module, batch = _module_and_batch("dino", recipe)

    def nearest_distance() -> float:
        with torch.no_grad():
            f = torch.nn.functional.normalize(module.encoder(batch[0]), dim=1)
        return float((torch.cdist(f, f) + 9 * torch.eye(len(f))).min(1).values.mean())

    optimizer = torch.optim.AdamW([p for p in module.encoder.parameters() if p.requires_grad], lr=1e-3)
    before = nearest_distance()
    for _ in range(5):
        optimizer.zero_grad()
        module.losses(batch)["koleo"].backward()
        optimizer.step()
    assert nearest_distance() > 1.2 * before


@pytest.mark.parametrize("method", sorted(METHODS))
def test_a_run_writes_its_history_and_changes_only_the_top_blocks(method, tmp_path, sample_root):
    start = build_encoder(EncoderSpec(weights="none", arch="test_vit", img_size=32))
    start.save(tmp_path / "start.pt")
    # DINO also starts from data prototypes and adds KoLeo here, so those paths run end to end.
    warmup = 0 if method == "distill" else 1  # distillation trains the embedding itself: it has no head
    recipe = _recipe(method, tmp_path, sample_root, "train.epochs=3", f"train.head_warmup_epochs={warmup}",
                     "tune.last_blocks=1", f"model.weights={tmp_path / 'start.pt'}", "dino.prototypes=data",
                     "dino.koleo_weight=0.1")
    summary = pretrain(recipe)
    if method == "dino":
        assert "prototypes from pool images" in (tmp_path / method / "log.txt").read_text()
    history = [json.loads(line) for line in (tmp_path / method / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2, 3]
    assert history[0]["loss"] is None and all(r["loss"] > 0 for r in history[1:])
    assert all(r["lr"] >= 0 and r["head_lr"] > 0 for r in history[1:])
    assert method != "dino" or 0.99 < history[1]["momentum"] <= history[-1]["momentum"] <= 1.0
    # DINO's epoch means of its loss's parts add up to the loss that trained.
    assert method != "dino" or all(r["koleo"] != 0 and r["loss"] == pytest.approx(r["dino_loss"] + 0.1 * r["koleo"])
                                   for r in history[1:])
    assert history[0]["overall"]["n_queries"] == 10 and history[0]["synthetic"]["n_queries"] == 10
    assert (tmp_path / method / "curves.png").stat().st_size > 10_000
    assert (tmp_path / method / "checkpoints" / "last.ckpt").is_file()
    assert list((tmp_path / method / "logs").glob("version_0/metrics.csv"))
    # The encoder file loads through the backbone factory; frozen blocks kept their initial weights.
    trained, initial = load_encoder(summary["encoder"]).state_dict(), start.state_dict()
    frozen = [k for k in initial if k.startswith("model.blocks.0.")]
    top = [k for k in initial if k.startswith("model.norm.")]
    assert frozen and all(torch.equal(trained[k], initial[k]) for k in frozen)
    assert top and any(not torch.equal(trained[k], initial[k]) for k in top)


def test_data_prototypes_make_each_image_its_own_peaked_target(tmp_path, sample_root):
    recipe = _recipe("dino", tmp_path, sample_root, "dino.out_dim=64", "dino.prototypes=data")
    module = METHODS["dino"](build_encoder(EncoderSpec.from_config(recipe.model)), recipe)
    features = torch.randn(20, module.encoder.dim) * 5
    norms = module.head.last_layer.weight_v.norm(dim=1)
    untouched = module.head.last_layer.weight_v[20:].clone()

    def entropy() -> float:
        with torch.no_grad():
            p = torch.softmax(module.teacher_head(features) / recipe.dino.teacher_temp, dim=1)
        return float(-(p * p.log()).sum(1).mean())

    before = entropy()
    assert module.init_prototypes(features) == 20
    with torch.no_grad():
        assert torch.equal(module.teacher_head(features).argmax(1), torch.arange(20))
    assert entropy() < before - 1.0
    assert torch.allclose(module.head.last_layer.weight_v.norm(dim=1), norms)
    assert torch.equal(module.head.last_layer.weight_v[20:], untouched)
    teacher = module.teacher_head.state_dict()
    assert all(torch.equal(v, teacher[k]) for k, v in module.head.state_dict().items())


def test_encoder_round_trips_through_eval(tmp_path, sample_root):
    summary = pretrain(_recipe("dino", tmp_path, sample_root, "train.epochs=2"))
    result = run_cli("eval", summary["encoder"], f"data.labeled=[{sample_root}]", "model.resize=center-crop",
                     "synthetic.num_queries=10", "embed.num_workers=0", "embed.progress=false",
                     "embed.precision=fp32", "post.steps=[learned_whiten]", f"run_dir={tmp_path / 'eval'}")
    assert result.returncode == 0, result.stderr
    metrics = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    last = summary["last"]
    # The monitor's last evaluation and the eval command see the same pool and synthetic photos, and
    # both score them before and after the training recipes' whitening fitted on that pool.
    for figures, monitored in ((metrics, last["overall"]), (metrics["synthetic"], last["synthetic"])):
        assert figures["hit@3"] == pytest.approx(monitored["hit@3"])
        assert {k: v for k, v in figures["raw"].items() if k != "conditions"} == pytest.approx(
            {k: v for k, v in monitored["raw"].items() if k != "conditions"})
    by_condition = {c: f["hit@3"] for c, f in metrics["synthetic"]["raw"]["conditions"].items()}
    assert by_condition == pytest.approx({c: f["hit@3"] for c, f in last["synthetic"]["raw"]["conditions"].items()})
    assert "before post" in result.stdout


def test_distillation_targets_are_made_once_and_read_back_while_what_made_them_holds(tmp_path, sample_root,
                                                                                       monkeypatch):
    # Every pool image's views cost as much as a submission: a resumed run must not pay them twice.
    def targets(*overrides: str) -> torch.Tensor:
        recipe = _recipe("distill", tmp_path, sample_root, "distill.turns=[0]", *overrides)
        return distill_targets(recipe, encoder, recipe_pool(recipe), RunDir(tmp_path))

    encoder = build_encoder(EncoderSpec.from_config(_recipe("distill", tmp_path, sample_root).model))
    made = []
    monkeypatch.setattr("ssl.pretrain.embed_images", lambda *a, **k: made.append(k["desc"]) or embed_images(*a, **k))
    first = targets()
    assert made == ["distillation targets"] and first.shape[1] == encoder.dim
    # Settings of speed only (batch size, progress) read them back, exactly.
    assert torch.equal(targets("embed.batch_size=3", "embed.progress=true"), first) and len(made) == 1
    # Other views are other targets: made again, and kept in place of the first.
    other = targets("distill.crop=false")
    assert len(made) == 2 and not torch.allclose(first, other)
    assert torch.equal(targets("distill.crop=false"), other) and len(made) == 2
    assert sorted(p.name for p in (tmp_path / TARGETS_DIR).iterdir()) == \
        ["embeddings.npy", "made_from.json", "names.json", "norms.npy"]  # no temporary file left


class Interrupt(pl.Callback):
    def on_train_epoch_start(self, trainer, pl_module):
        if trainer.current_epoch == 1:
            raise RuntimeError("power cut")


@pytest.mark.slow
@pytest.mark.parametrize("method", sorted(METHODS))
def test_resume_ends_where_the_uninterrupted_run_ends(method, tmp_path, sample_root):
    # Data-loader workers as the shipped recipes have them: they prefetch before Lightning names the
    # epoch, so a resume that only worked without workers would replay epoch 0 here.
    common = ["train.epochs=2", "train.head_warmup_epochs=0", "monitor.every_n_epochs=1", "train.num_workers=2",
              "train.images_per_epoch=16"]
    if method == "distill":  # and RotNet's term, whose turns must be drawn again alike after the resume
        common.append("train.rotation_weight=0.5")
    straight = pretrain(_recipe(method, tmp_path / "a", sample_root, *common))
    recipe = _recipe(method, tmp_path / "b", sample_root, *common)
    with pytest.raises(RuntimeError, match="power cut"):
        pretrain(recipe, callbacks=(Interrupt(),))
    run = tmp_path / "b" / method
    assert [json.loads(x)["epoch"] for x in (run / "metrics.jsonl").read_text().splitlines()] == [0, 1]
    result = run_cli("ssl.pretrain", "--resume", str(run))
    assert result.returncode == 0, result.stderr
    a, b = load_encoder(straight["encoder"]).state_dict(), load_encoder(run / "encoder.pt").state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    lines_a = [json.loads(x) for x in (tmp_path / "a" / method / "metrics.jsonl").read_text().splitlines()]
    lines_b = [json.loads(x) for x in (run / "metrics.jsonl").read_text().splitlines()]
    drop = ("time", "eval_s")
    assert [{k: v for k, v in r.items() if k not in drop} for r in lines_a] == \
           [{k: v for k, v in r.items() if k not in drop} for r in lines_b]


def test_cli_errors_name_the_problem(tmp_path, capsys):
    result = run_main(capsys, "ssl.pretrain", "recipes/dino.yaml", "train.epoch=3")
    assert result.returncode == 2 and "unknown recipe key" in result.stderr and "train.epochs" in result.stderr
    result = run_main(capsys, "ssl.pretrain", "--resume", str(tmp_path))
    assert result.returncode == 2 and "recipe.yaml" in result.stderr
    result = run_main(capsys, "ssl.pretrain", "recipes/dino.yaml", "method=byol")
    assert result.returncode == 2 and "dino, simclr" in result.stderr


@pytest.mark.slow
def test_two_processes_train_with_ddp(tmp_path, sample_root):
    """Multi-device through Lightning: two CPU processes (gloo) stand in for two GPUs."""
    result = run_cli("ssl.pretrain", "recipes/dino.yaml", *TINY, f"data.labeled=[{sample_root}]", "train.epochs=2",
                     "trainer.accelerator=cpu", "trainer.devices=2", "trainer.strategy=ddp",
                     f"run_dir={tmp_path / 'ddp'}")
    assert result.returncode == 0, result.stderr[-3000:]
    history = [json.loads(x) for x in (tmp_path / "ddp" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in history] == [0, 1, 2] and (tmp_path / "ddp" / "encoder.pt").is_file()


def test_a_clean_teacher_reads_only_the_studio_view_and_the_student_learns_from_hard_photos(tmp_path, sample_root):
    recipe = _recipe("dino", tmp_path, sample_root, "train.head_warmup_epochs=0", "dino.clean_teacher=true",
                     "views.hard.p=1.0")
    module, batch = _module_and_batch("dino", recipe)
    seen = []
    module.teacher.register_forward_hook(lambda m, args, out: seen.append(args[0].shape[0]))
    student = []
    module.encoder.register_forward_hook(lambda m, args, out: student.append(args[0].shape[-1]))
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=1e-3)
    centre = module.criterion.center.clone()
    losses = []
    for _ in range(6):
        module.criterion.center.copy_(centre)
        optimizer.zero_grad()
        loss = module.loss(batch)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert len(seen) == 6  # one teacher pass (the clean global view) per step, not two
    assert student[:len(batch) - 1] == [32, 16, 16]  # the student: the photo global view and the locals only
    assert losses[-1] < losses[0] - 0.05


@pytest.mark.parametrize("method", sorted(METHODS))
def test_rotation_term_teaches_the_tuned_blocks_the_quarter_turn_of_the_clean_view(method, tmp_path, sample_root):
    off, _ = _module_and_batch(method, _recipe(method, tmp_path, sample_root, "train.head_warmup_epochs=0"))
    recipe = _recipe(method, tmp_path, sample_root, "train.head_warmup_epochs=0", "train.rotation_weight=0.5")
    module, batch = _module_and_batch(method, recipe)
    assert off.rotation is None and off.add_rotation(torch.tensor(1.0), batch[0])[1] == {}
    loss, logged = module.add_rotation(torch.tensor(1.0), batch[0])
    assert set(logged) == {"rotation_loss", "rotation_acc"}
    assert loss.item() == pytest.approx(1.0 + 0.5 * logged["rotation_loss"].item())
    # The turns are drawn from the step: the same step draws them again (a resumed run trains alike).
    assert module.rotation_loss(batch[0])[0].item() == pytest.approx(logged["rotation_loss"].item())
    # The term reaches the tuned blocks, not only its head, and lowers itself.
    loss.backward()
    tuned = [p for n, p in module.encoder.named_parameters() if p.requires_grad and "blocks" in n]
    assert tuned and all(p.grad is not None and p.grad.abs().sum() > 0 for p in tuned)
    optimizer = torch.optim.AdamW([p for p in module.parameters() if p.requires_grad], lr=3e-3)
    before = logged["rotation_loss"].item()
    for _ in range(10):
        optimizer.zero_grad()
        module.rotation_loss(batch[0])[0].backward()
        optimizer.step()
    assert module.rotation_loss(batch[0])[0].item() < before - 0.3
    # The optimizer the trainer builds holds the head (at head_lr), beside the tuned blocks.
    module.trainer = type("T", (), {"estimated_stepping_batches": 10, "max_epochs": 1})()
    head_group = module.configure_optimizers()["optimizer"].param_groups[-1]
    assert any(p is module.rotation.weight for p in head_group["params"])


def test_a_finished_run_resumed_with_another_export_writes_that_network(tmp_path, sample_root, capsys):
    recipe = _recipe("dino", tmp_path, sample_root, "train.epochs=1", "train.head_warmup_epochs=0",
                     "monitor.every_n_epochs=0", "train.images_per_epoch=16")
    teacher = load_encoder(pretrain(recipe)["encoder"]).state_dict()
    run = tmp_path / "dino"
    result = run_main(capsys, "ssl.pretrain", "--resume", str(run), "train.export=student")
    assert result.returncode == 0, result.stderr
    student = load_encoder(run / "encoder.pt").state_dict()
    trained = torch.load(run / "checkpoints" / "last.ckpt", weights_only=True)["state_dict"]
    assert all(torch.equal(student[k], trained[f"encoder.{k}"]) for k in student)
    assert any(not torch.equal(student[k], teacher[k]) for k in student)
