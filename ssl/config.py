"""The training recipes: what both stages share (``TrainingRecipe``: views, tuning, training, the
monitor, SimCLR, the trainer) and stage 1's own (``PretrainRecipe``: the method choice and DINO)."""

from __future__ import annotations

from dataclasses import dataclass, field

from omegaconf import DictConfig, OmegaConf

from core.base.errors import RecipeError
from core.base.options import check_choices, option
from core.recipe import Recipe
from ssl.methods import CENTERINGS, METHODS
from ssl.tuning import TUNE_MODES, TuneConfig

EXPORTS = ("teacher", "student")
PROTOTYPES = ("random", "data")


@dataclass
class HardConfig:
    """Visitor photos in the conditions the queries find hardest, one condition per view (``views.hard``)."""

    # The share of visitor-photo views that are hard photos: dim, low-resolution or zoomed in, in turn.
    p: float = option(0.0, ge=0, le=1)
    # Uneven dim light: the view's brightness times this gain (a ramp of +-30% across it), with shadows
    # and glare.
    dim_gain: list[float] = field(default_factory=lambda: [0.45, 0.65])
    # Low resolution: the longer side brought down to this many pixels, with blur and JPEG of this quality.
    low_side: list[int] = field(default_factory=lambda: [200, 300])
    jpeg_quality: list[int] = field(default_factory=lambda: [35, 85])
    # Zoom-ins: a window of this share of the painting's sides.
    zoom_window: list[float] = field(default_factory=lambda: [0.5, 0.95])

    @staticmethod
    def check(section, key: str) -> None:
        for name, low, high in (("dim_gain", 0, 1), ("low_side", 8, 100_000), ("jpeg_quality", 1, 100),
                                ("zoom_window", 0, 1)):
            lo, hi = list(section[name])
            if not low < lo <= hi <= high:
                raise RecipeError(f"{key}.{name}=[{lo}, {hi}] must satisfy {low} < low <= high <= {high}")


@dataclass
class ViewsConfig:
    # Global (and SimCLR) view side. Low-resolution mode: 112 for a ViT-S/14 costs ~1/4 of 224.
    global_size: int = option(224, ge=8)
    global_scale: list[float] = field(default_factory=lambda: [0.4, 1.0])
    # Probability that a view other than the first is a simulated visitor photo.
    photo_p: float = option(0.8, ge=0, le=1)
    # Images are shrunk to this longer side before augmenting (speed; views are far smaller).
    max_side: int = option(448, ge=16)
    # A visitor photo's chance of a quarter turn (180 > 270 > 90, as in the competition's queries)
    # and of a 2-10 degree tilt inside pale padding. Off: at the stage-1 budget they taught no turns
    # (docs/results/views.md, "Training views").
    turn_p: float = option(0.0, ge=0, le=1)
    padding_p: float = option(0.0, ge=0, le=1)
    hard: HardConfig = field(default_factory=HardConfig)


@dataclass
class DinoConfig:
    # Multi-crop: n_local small crops of local_size px beside the two global views.
    local_size: int = option(98, ge=8)
    n_local: int = option(4, ge=0)
    local_scale: list[float] = field(default_factory=lambda: [0.08, 0.4])
    hidden_dim: int = option(1024, ge=1)
    bottleneck_dim: int = option(256, ge=1)
    out_dim: int = option(4096, ge=1)
    teacher_temp: float = option(0.04, gt=0)
    warmup_teacher_temp: float = option(0.04, gt=0)
    warmup_teacher_temp_epochs: int = option(0, ge=0)
    student_temp: float = option(0.1, gt=0)
    center_momentum: float = option(0.9, ge=0, le=1)
    # Teacher EMA momentum, cosine from start to end over the run.
    momentum_start: float = option(0.996, ge=0, le=1)
    momentum_end: float = option(1.0, ge=0, le=1)
    # Epochs during which the head's last layer stays fixed (DINO's stabiliser).
    freeze_last_layer_epochs: int = option(1, ge=0)
    # How the head's K prototypes start. "random": DINO's init; from a pretrained backbone its
    # targets are near uniform (entropy ~ln K) and a few hundred steps barely sharpen them.
    # "data": the first prototypes point at the bottleneck outputs of random pool images, so
    # from the first step each image's target peaks on its own and its neighbours' prototypes.
    prototypes: str = "random"
    # Images embedded for "data" prototypes (at most dino.out_dim; the rest stay random).
    prototype_images: int = option(1024, ge=1)
    # How the teacher's targets are kept from collapsing (ssl.methods.CENTERINGS): "mean", DINO's running
    # centre, or "sinkhorn", DINOv2's Sinkhorn-Knopp (each batch spread over the prototypes).
    centering: str = "mean"
    # Weight of lightly's KoLeo regulariser (DINOv2 uses 0.1) on the student's pooled features of the
    # two global views, the embedding retrieval uses: it spreads them apart within the batch. 0: off.
    koleo_weight: float = option(0.0, ge=0)
    # The second global view is always a simulated visitor photo (else with views.photo_p), so every
    # teacher target on the studio view is matched from a photo: the loss crosses the domain gap.
    cross_domain: bool = False
    # The teacher reads only the clean global view (the studio image) and the student matches its target
    # from every other view, all visitor photos (hard ones with views.hard.p): each loss term ties a
    # degraded view to the clean image. Implies cross_domain.
    clean_teacher: bool = False


@dataclass
class SimclrConfig:
    hidden_dim: int = option(1024, ge=1)
    out_dim: int = option(128, ge=1)
    temperature: float = option(0.1, gt=0)


@dataclass
class DistillConfig:
    """Distillation from the clean image to its visitor photos (``method: distill``)."""

    # The targets: every pool image embedded by the frozen starting model with these views (the
    # submission's by default), once before training; or the saved embeddings of an eval run of the same
    # pool (its folder) made that way.
    turns: list[int] = field(default_factory=lambda: [0, 90, 180, 270])
    crop: bool = True
    targets: str | None = None
    # InfoNCE temperature: each view against the batch's targets.
    temperature: float = option(0.05, gt=0)


@dataclass
class TrainConfig:
    epochs: int = option(10, ge=1)
    batch_size: int = option(32, ge=2)
    num_workers: int = option(2, ge=0)
    # Base learning rate of the top layer group (layer decay scales the ones below); the projection
    # head, new and randomly initialised, learns at head_lr.
    lr: float = option(2e-5, ge=0)
    head_lr: float = option(1e-3, ge=0)
    weight_decay: float = option(0.04, ge=0)
    warmup_epochs: int = option(1, ge=0)
    # Epochs at the start during which only the head trains: a random head's first gradients would
    # otherwise push noise into the pretrained backbone.
    head_warmup_epochs: int = option(1, ge=0)
    # Images drawn per epoch (a fresh random subset each epoch); null: all of them.
    images_per_epoch: int | None = option(None, ge=1)
    # Which DINO network becomes the encoder file: the EMA teacher is the usual choice (SimCLR has
    # only the student).
    export: str = "teacher"
    # Gradient clipping by norm (0 disables).
    clip_grad: float = option(3.0, ge=0)
    # Weight of RotNet's term beside the method's loss (0: off): each item's first view (stage 1: the clean
    # studio view; stage 2: a view of the pair's first image) is turned by a quarter turn and a linear head
    # on the pooled features says which, so the tuned blocks learn where a painting's up is, which
    # embed.orient's head (core/model/orient.py) then reads.
    rotation_weight: float = option(0.0, ge=0)


@dataclass
class MonitorConfig:
    # Evaluate every N epochs (and before the first one); 0 disables the per-epoch evaluation.
    every_n_epochs: int = option(1, ge=0)
    # Images of the pool embedded each time: all labeled images plus a fixed random fill up to this.
    pool_size: int = option(1000, ge=2)


@dataclass
class TrainerConfig:
    """Passed to PyTorch Lightning's Trainer: change devices/strategy to scale out (e.g. ddp)."""

    accelerator: str = "auto"
    devices: str = "1"
    strategy: str = "auto"
    # Lightning precision ("bf16-mixed", "16-mixed", "32-true"), or "auto": bf16-mixed where the
    # accelerator runs bf16 natively, else 32-true (emulated bf16 trains several times slower).
    precision: str = "auto"
    log_every_n_steps: int = option(10, ge=1)


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
        check_choices(cfg, (("train.export", EXPORTS), ("tune.mode", TUNE_MODES)))
        _check_scale(cfg, "views.global_scale")
        if cfg.method == "distill" and cfg.train.head_warmup_epochs:
            raise RecipeError(f"method=distill trains the embedding itself and has no head to warm up: "
                              f"train.head_warmup_epochs={cfg.train.head_warmup_epochs}. Fix: "
                              "train.head_warmup_epochs=0")
        if cfg.train.head_warmup_epochs >= cfg.train.epochs and cfg.tune.mode != "head":
            raise RecipeError(f"train.head_warmup_epochs={cfg.train.head_warmup_epochs} leaves no epoch to adapt "
                              f"the backbone in train.epochs={cfg.train.epochs}. Fix: lower it or raise the epochs")


@dataclass
class PretrainRecipe(TrainingRecipe):
    """Stage 1: the training recipe plus the choice of method and DINO's section."""

    method: str = "dino"
    dino: DinoConfig = field(default_factory=DinoConfig)
    distill: DistillConfig = field(default_factory=DistillConfig)

    @staticmethod
    def validate(cfg: DictConfig) -> None:
        check_choices(cfg, (("method", METHODS), ("dino.prototypes", PROTOTYPES), ("dino.centering", CENTERINGS)))
        _check_scale(cfg, "dino.local_scale")
