"""The training recipes: what both stages share (``TrainingRecipe``: views, tuning, training, the
monitor, SimCLR, the trainer) and stage 1's own (``PretrainRecipe``: the method choice and DINO)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from core.errors import RecipeError
from core.recipe import Recipe, TuneConfig, check_choices
from ssl.methods import METHODS

EXPORTS = ("teacher", "student")
PROTOTYPES = ("random", "data")


@dataclass
class ViewsConfig:
    # Global (and SimCLR) view side. Low-resolution mode: 112 for a ViT-S/14 costs ~1/4 of 224.
    global_size: int = 224
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    # Probability that a view other than the first is a simulated visitor photo.
    photo_p: float = 0.8
    # Images are shrunk to this longer side before augmenting (speed; views are far smaller).
    max_side: int = 448
    # A visitor photo's chance of a quarter turn (180 > 270 > 90, as in the competition's queries)
    # and of a 2-10 degree tilt inside pale padding. Off: at the stage-1 budget they taught no turns
    # (README, "Turned and framed photos"; benchmarks/train_views.sh).
    turn_p: float = 0.0
    padding_p: float = 0.0


@dataclass
class DinoConfig:
    # Multi-crop: n_local small crops of local_size px beside the two global views.
    local_size: int = 98
    n_local: int = 4
    local_scale: list[float] = field(default_factory=lambda: [0.08, 0.4])
    hidden_dim: int = 1024
    bottleneck_dim: int = 256
    out_dim: int = 4096
    teacher_temp: float = 0.04
    warmup_teacher_temp: float = 0.04
    warmup_teacher_temp_epochs: int = 0
    student_temp: float = 0.1
    center_momentum: float = 0.9
    # Teacher EMA momentum, cosine from start to end over the run.
    momentum_start: float = 0.996
    momentum_end: float = 1.0
    # Epochs during which the head's last layer stays fixed (DINO's stabiliser).
    freeze_last_layer_epochs: int = 1
    # How the head's K prototypes start. "random": DINO's init; from a pretrained backbone its
    # targets are near uniform (entropy ~ln K) and a few hundred steps barely sharpen them.
    # "data": the first prototypes point at the bottleneck outputs of random pool images, so
    # from the first step each image's target peaks on its own and its neighbours' prototypes.
    prototypes: str = "random"
    # Images embedded for "data" prototypes (at most dino.out_dim; the rest stay random).
    prototype_images: int = 1024
    # Weight of lightly's KoLeo regulariser (DINOv2 uses 0.1) on the student's pooled features of the
    # two global views, the embedding retrieval uses: it spreads them apart within the batch. 0: off.
    koleo_weight: float = 0.0
    # The second global view is always a simulated visitor photo (else with views.photo_p), so every
    # teacher target on the studio view is matched from a photo: the loss crosses the domain gap.
    cross_domain: bool = False


@dataclass
class SimclrConfig:
    hidden_dim: int = 1024
    out_dim: int = 128
    temperature: float = 0.1


@dataclass
class TrainConfig:
    epochs: int = 10
    batch_size: int = 32
    num_workers: int = 2
    # Base learning rate of the top layer group (layer decay scales the ones below); the projection
    # head, new and randomly initialised, learns at head_lr.
    lr: float = 2e-5
    head_lr: float = 1e-3
    weight_decay: float = 0.04
    warmup_epochs: int = 1
    # Epochs at the start during which only the head trains: a random head's first gradients would
    # otherwise push noise into the pretrained backbone.
    head_warmup_epochs: int = 1
    # Images drawn per epoch (a fresh random subset each epoch); null: all of them.
    images_per_epoch: int | None = None
    # Which DINO network becomes the encoder file: the EMA teacher is the usual choice (SimCLR has
    # only the student).
    export: str = "teacher"
    # Gradient clipping by norm (0 disables).
    clip_grad: float = 3.0


@dataclass
class MonitorConfig:
    # Evaluate every N epochs (and before the first one); 0 disables the per-epoch evaluation.
    every_n_epochs: int = 1
    # Images of the pool embedded each time: all labeled images plus a fixed random fill up to this.
    pool_size: int = 1000


@dataclass
class TrainerConfig:
    """Passed to PyTorch Lightning's Trainer: change devices/strategy to scale out (e.g. ddp)."""

    accelerator: str = "auto"
    devices: str = "1"
    strategy: str = "auto"
    # Lightning precision ("bf16-mixed", "16-mixed", "32-true"), or "auto": bf16-mixed where the
    # accelerator runs bf16 natively, else 32-true (emulated bf16 trains several times slower).
    precision: str = "auto"
    log_every_n_steps: int = 10


def _check_scale(cfg: DictConfig, key: str) -> None:
    lo, hi = list(OmegaConf.select(cfg, key))
    if not 0 < lo <= hi <= 1:
        raise RecipeError(f"{key}=[{lo}, {hi}] must satisfy 0 < low <= high <= 1")


@dataclass
class TrainingRecipe(Recipe):
    """What stage 1 and stage 2 share: views, tuning, the loop, the monitor, SimCLR, the trainer."""

    method: str = "simclr"
    views: ViewsConfig = field(default_factory=ViewsConfig)
    tune: TuneConfig = field(default_factory=TuneConfig)
    train: TrainConfig = field(default_factory=TrainConfig)
    monitor: MonitorConfig = field(default_factory=MonitorConfig)
    simclr: SimclrConfig = field(default_factory=SimclrConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        check_choices(cfg, (("train.export", EXPORTS),))
        _check_scale(cfg, "views.global_scale")
        for key in ("views.photo_p", "views.turn_p", "views.padding_p"):
            if not 0 <= OmegaConf.select(cfg, key) <= 1:
                raise RecipeError(f"{key}={OmegaConf.select(cfg, key)} is a probability: between 0 and 1")
        if cfg.train.epochs < 1 or cfg.train.batch_size < 2:
            raise RecipeError("train.epochs must be >= 1 and train.batch_size >= 2 (contrastive losses "
                              "need other images in the batch)")
        if cfg.train.head_warmup_epochs >= cfg.train.epochs and cfg.tune.mode != "head":
            raise RecipeError(f"train.head_warmup_epochs={cfg.train.head_warmup_epochs} leaves no epoch to adapt "
                              f"the backbone in train.epochs={cfg.train.epochs}. Fix: lower it or raise the epochs")


@dataclass
class PretrainRecipe(TrainingRecipe):
    """Stage 1: the training recipe plus the choice of method and DINO's section."""

    method: str = "dino"
    dino: DinoConfig = field(default_factory=DinoConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        check_choices(cfg, (("method", METHODS), ("dino.prototypes", PROTOTYPES)))
        _check_scale(cfg, "dino.local_scale")
        if cfg.dino.koleo_weight < 0:
            raise RecipeError(f"dino.koleo_weight={cfg.dino.koleo_weight} must be >= 0 (0 turns KoLeo off)")
