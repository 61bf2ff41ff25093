"""DINO and SimCLR as LightningModules, on lightly's losses, heads and schedules.

Both train a Curator :class:`~core.model.backbone.Encoder` (already set up by ``ssl.tuning``) through a
projection head, and export the encoder that retrieval uses: DINO's EMA teacher (or the student),
SimCLR's network. The retrieval embedding is the encoder's pooled output, before the head.

A method is an ``SSLModule`` subclass registered with ``@register_method("name")``: ``method=name``
in a recipe then trains it. ``multi_crop`` says which views it takes (DINO's globals + locals, or a
pair); a momentum method keeps its teacher with :class:`EMA`.
"""

from __future__ import annotations

import copy
import math
import time
from contextlib import nullcontext

import pytorch_lightning as pl
import torch
from lightly.loss import DINOLoss, KoLeoLoss, NTXentLoss
from lightly.loss.swav_loss import sinkhorn
from lightly.models.modules import DINOProjectionHead, SimCLRProjectionHead
from lightly.models.utils import deactivate_requires_grad
from lightly.utils.scheduler import cosine_schedule
from omegaconf import DictConfig
from torch import nn

from core.base.registry import Registry
from core.model.backbone import Encoder
from core.model.orient import QUARTERS
from ssl.tuning import merged_copy, param_groups


def _warmup_cosine(step: int, start: int, warmup: int, total: int) -> float:
    """0 before ``start``, linear up to 1 over ``warmup`` steps, then cosine down to 0 at ``total``."""
    if step < start:
        return 0.0
    if step < start + warmup:
        return (step - start + 1) / warmup
    return 0.5 * (1 + math.cos(math.pi * min(1.0, (step - start - warmup) / max(1, total - start - warmup))))


class SSLModule(pl.LightningModule):
    """What DINO and SimCLR share: the optimizer and schedules, head warm-up, logging, export."""

    # Whether the method takes multi-crop views (two globals, then locals) instead of a pair.
    multi_crop = False
    # Whether each batch ends with the pool rows of its images (a method with per-image targets).
    needs_index = False

    def __init__(self, encoder: Encoder, head: nn.Module, recipe: DictConfig):
        super().__init__()
        # Encoders are built for inference (eval mode); the student trains.
        self.encoder = encoder.train()
        self.head = head
        self.train_cfg = recipe.train
        self.layer_decay = float(recipe.tune.layer_decay)
        self.rotation_weight = float(recipe.train.rotation_weight)
        # RotNet's head (train.rotation_weight): the quarter turn of a view, from its pooled features.
        self.rotation = nn.Linear(encoder.dim, len(QUARTERS)) if self.rotation_weight else None
        self._last_step_end: float | None = None

    @property
    def backbone_frozen(self) -> bool:
        """During head warm-up only the head trains, and the encoder runs without gradients."""
        return self.current_epoch < int(self.train_cfg.head_warmup_epochs)

    def embed(self, views: torch.Tensor) -> torch.Tensor:
        with torch.no_grad() if self.backbone_frozen else nullcontext():
            return self.encoder(views)

    def configure_optimizers(self):
        cfg = self.train_cfg
        backbone = param_groups(self.encoder, float(cfg.lr), float(cfg.weight_decay), self.layer_decay)
        heads = [*self.head.parameters(), *(self.rotation.parameters() if self.rotation is not None else ())]
        head = {"params": [p for p in heads if p.requires_grad], "lr": float(cfg.head_lr),
                "weight_decay": float(cfg.weight_decay)}
        optimizer = torch.optim.AdamW([*backbone, head])  # a method without a head has an empty last group
        total = int(self.trainer.estimated_stepping_batches)
        per_epoch = max(1, total // max(1, int(self.trainer.max_epochs)))
        warmup = max(1, int(cfg.warmup_epochs) * per_epoch)
        start = int(cfg.head_warmup_epochs) * per_epoch
        schedules = [lambda s: _warmup_cosine(s, start, warmup, total)] * len(backbone)
        schedules.append(lambda s: _warmup_cosine(s, 0, warmup, total))
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, schedules)
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": scheduler, "interval": "step"}}

    def rotation_loss(self, views: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RotNet's loss and accuracy on square ``views`` (B, C, H, W), each turned clockwise by a quarter
        turn drawn from the global step: a resumed run draws the turns the uninterrupted one drew."""
        draw = torch.Generator().manual_seed(self.global_step)
        turns = torch.randint(len(QUARTERS), (len(views),), generator=draw)
        # rot90 turns counter-clockwise; class k is k quarter turns clockwise (core.model.orient).
        turned = torch.stack([torch.rot90(v, k=-k, dims=(1, 2)) for v, k in zip(views, turns.tolist(), strict=True)])
        logits = self.rotation(self.embed(turned))
        turns = turns.to(logits.device)
        return nn.functional.cross_entropy(logits, turns), (logits.argmax(-1) == turns).float().mean()

    def add_rotation(self, loss: torch.Tensor, views: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The method's ``loss`` plus ``train.rotation_weight`` times RotNet's on ``views``, and RotNet's
        loss and accuracy to log (none when off)."""
        if self.rotation is None:
            return loss, {}
        rotation, accuracy = self.rotation_loss(views)
        return loss + self.rotation_weight * rotation, {"rotation_loss": rotation.detach(), "rotation_acc": accuracy}

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        """The method's ``loss`` (with RotNet's on the first view, the clean one), logged."""
        loss, rotation = self.add_rotation(self.loss(batch), batch[0])
        self.log_step(loss, len(batch[0]), **rotation)
        return {"loss": loss, **rotation}

    def log_step(self, loss: torch.Tensor, batch_size: int, **extra: float) -> None:
        now = time.perf_counter()
        if self._last_step_end is not None:
            self.log("img_s", batch_size * self.trainer.world_size / (now - self._last_step_end), prog_bar=True,
                     on_step=True, on_epoch=False)
        self._last_step_end = now
        groups = self.optimizers().param_groups
        self.log("loss", loss, prog_bar=True, on_step=True, on_epoch=True, batch_size=batch_size, sync_dist=True)
        self.log("lr", max(g["lr"] for g in groups[:-1]) if len(groups) > 1 else 0.0, on_step=True, on_epoch=False)
        self.log("head_lr", groups[-1]["lr"], on_step=True, on_epoch=False)
        for key, value in extra.items():
            self.log(key, value, on_step=True, on_epoch=False)

    def retrieval_encoder(self) -> Encoder:
        """The network that embeds images for retrieval (the student here)."""
        return self.encoder

    def export_encoder(self) -> Encoder:
        """A float32 copy of the retrieval encoder with LoRA merged, ready to save or evaluate."""
        return merged_copy(self.retrieval_encoder())


# The methods ``method`` may name; the recipe schema checks against this.
METHODS: Registry[type[SSLModule]] = Registry("SSL method")
register_method = METHODS.register


class EMA:
    """A teacher that follows its student by exponential moving average, for any momentum method.

    ``pairs``: (teacher, student) modules of the same shapes. The momentum follows lightly's cosine
    schedule from ``start`` to ``end`` over the run.
    """

    def __init__(self, pairs: list[tuple[nn.Module, nn.Module]], start: float, end: float):
        self.pairs, self.start, self.end = pairs, start, end

    def momentum(self, step: int, total: int) -> float:
        return cosine_schedule(step, max(1, total), self.start, self.end)

    @torch.no_grad()
    def update(self, momentum: float) -> None:
        """teacher <- momentum * teacher + (1 - momentum) * student, over the weights that train.

        Not lightly's ``update_momentum``: it walks every weight, and its ``m*t + (1-m)*s`` rounding
        moves frozen weights (equal in both) by ~1e-8 a step. ``lerp`` leaves equal weights exactly
        as they are, and the frozen majority is skipped altogether.
        """
        pairs = [(t, s) for teacher, student in self.pairs
                 for t, s in zip(teacher.parameters(), student.parameters(), strict=True) if s.requires_grad]
        if pairs:
            teacher, student = zip(*pairs, strict=True)
            torch._foreach_lerp_(list(teacher), list(student), 1.0 - momentum)


class SinkhornDINOLoss(DINOLoss):
    """DINO's loss with DINOv2's Sinkhorn-Knopp centring: the teacher's targets are the batch's soft
    assignment to prototypes that gives every prototype an equal share (SwAV's equipartition).

    Mean centring only subtracts a running mean: on the dev pool, 136 steps from a pretrained backbone let
    the teacher send 200 images to 12 prototypes. Sinkhorn-Knopp spreads each batch over the prototypes
    (44 in use there), though the retrieval embedding learned no more with it (docs/results/hard_photos.md).

    >>> loss = SinkhornDINOLoss(output_dim=8, teacher_temp=0.05, warmup_teacher_temp=0.05)
    >>> logits = torch.tensor([[1.0, 0, 0, 0, 0, 0, 0, 0], [0.9, 0.8, 0, 0, 0, 0, 0, 0]])
    >>> (logits / 0.05).softmax(1).argmax(1).tolist()  # softmax: both images go to prototype 0
    [0, 0]
    >>> loss.targets(logits, 0.05).argmax(1).tolist()  # Sinkhorn-Knopp: the second goes to its next best
    [0, 1]
    """

    def temperature(self, epoch: int | None) -> float:
        """The teacher temperature of ``epoch``, on lightly's warm-up schedule."""
        warm = epoch is not None and epoch < self.warmup_teacher_temp_epochs
        return float(self.teacher_temp_schedule[epoch] if warm else self.teacher_temp)

    @staticmethod
    @torch.no_grad()
    def targets(teacher_out: torch.Tensor, temperature: float) -> torch.Tensor:
        """(B, K) teacher logits -> (B, K) targets, rows summing to 1 (3 Sinkhorn-Knopp iterations)."""
        # exp(logit / 0.02) leaves float32's range (1e38) at a logit of 1.8: float64's reaches 14.
        q = sinkhorn(teacher_out.double(), iterations=3, epsilon=temperature, gather_distributed=True)
        return q.float()

    def forward(self, teacher_out: list[torch.Tensor], student_out: list[torch.Tensor],
                teacher_temp: float | None = None, epoch: int | None = None) -> torch.Tensor:
        """Cross-entropy of each student view against each other view's Sinkhorn-Knopp target."""
        temperature = self.temperature(epoch) if teacher_temp is None else teacher_temp
        q = torch.stack([self.targets(t, temperature) for t in teacher_out])
        log_p = nn.functional.log_softmax(torch.stack(student_out) / self.student_temp, dim=-1)
        terms = -torch.einsum("tbd,sbd->ts", q, log_p)
        terms.fill_diagonal_(0)  # a view is not its own target (as lightly's DINOLoss)
        return terms.sum() / ((terms.numel() - min(terms.shape)) * q.shape[1])


# dino.centering: how the teacher's targets are kept from collapsing.
CENTERINGS = {"mean": DINOLoss, "sinkhorn": SinkhornDINOLoss}


@register_method("dino")
class DINOModule(SSLModule):
    """DINO (Caron et al. 2021): a student matches an EMA teacher across multi-crop views."""

    multi_crop = True

    def __init__(self, encoder: Encoder, recipe: DictConfig):
        d = recipe.dino

        def make_head() -> DINOProjectionHead:
            return DINOProjectionHead(encoder.dim, d.hidden_dim, d.bottleneck_dim, d.out_dim,
                                      freeze_last_layer=int(d.freeze_last_layer_epochs))

        super().__init__(encoder, make_head(), recipe)
        self.export = recipe.train.export
        self.dino_cfg = d
        self.teacher = copy.deepcopy(encoder).eval()
        # DINOProjectionHead cannot be deep-copied (weight norm): build it again, copy the weights.
        self.teacher_head = make_head()
        self.teacher_head.load_state_dict(self.head.state_dict())
        deactivate_requires_grad(self.teacher)
        deactivate_requires_grad(self.teacher_head)
        self.ema = EMA([(self.teacher, self.encoder), (self.teacher_head, self.head)],
                       float(d.momentum_start), float(d.momentum_end))
        self.criterion = CENTERINGS[d.centering](output_dim=d.out_dim, warmup_teacher_temp=d.warmup_teacher_temp,
                                  teacher_temp=d.teacher_temp, warmup_teacher_temp_epochs=d.warmup_teacher_temp_epochs,
                                  student_temp=d.student_temp, center_momentum=d.center_momentum)
        self.koleo_weight = float(d.koleo_weight)
        self.clean_teacher = bool(d.clean_teacher)
        self.koleo = KoLeoLoss()

    @torch.no_grad()
    def init_prototypes(self, features: torch.Tensor) -> int:
        """Point the first prototypes of student and teacher heads at these encoder features.

        Prototype k becomes the direction of image k's bottleneck output (keeping the row's norm,
        which sets its Adam step size); returns how many prototypes were set.
        """
        k = min(len(features), int(self.dino_cfg.out_dim))
        z = nn.functional.normalize(self.head.layers(features[:k].float()), dim=1)
        rows = self.head.last_layer.weight_v
        rows[:k] = z * rows[:k].norm(dim=1, keepdim=True)
        self.teacher_head.load_state_dict(self.head.state_dict())
        return k


    def losses(self, batch: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        """DINO's loss and KoLeo's of a batch of views (globals first); updates DINO's centre.

        KoLeo, as in DINOv2, is summed over the two global views, each spread within the batch, on the
        student's pooled features: the embedding retrieval uses, not the head's output. 0 when off.
        """
        teachers = batch[:1] if self.clean_teacher else batch[:2]
        with torch.no_grad():
            teacher_out = [self.teacher_head(self.teacher(view)) for view in teachers]
        # With a clean teacher, the student never needs the clean view: its place (the diagonal term
        # lightly's loss leaves out) is held by zeros.
        student = batch[1:] if self.clean_teacher else batch
        features = [self.embed(view) for view in student]
        outputs = [self.head(f) for f in features]
        if self.clean_teacher:
            outputs.insert(0, torch.zeros_like(outputs[0]))
        dino = self.criterion(teacher_out, outputs, epoch=self.current_epoch)
        koleo = sum(self.koleo(f) for f in features[:2]) if self.koleo_weight else dino.new_zeros(())
        return {"dino": dino, "koleo": koleo}

    def combine(self, losses: dict[str, torch.Tensor]) -> torch.Tensor:
        """The loss that trains: DINO's plus ``dino.koleo_weight`` times KoLeo's."""
        return losses["dino"] + self.koleo_weight * losses["koleo"]

    def loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """The training loss of a batch of views (globals first); updates DINO's centre."""
        return self.combine(self.losses(batch))

    def training_step(self, batch: list[torch.Tensor], batch_idx: int) -> dict[str, torch.Tensor]:
        momentum = self.ema.momentum(self.global_step, int(self.trainer.estimated_stepping_batches))
        self.ema.update(momentum)
        parts = self.losses(batch)
        loss, rotation = self.add_rotation(self.combine(parts), batch[0])
        dino, koleo = parts["dino"].detach(), parts["koleo"].detach()
        self.log_step(loss, len(batch[0]), momentum=momentum, dino_loss=dino, koleo=koleo, **rotation)
        # The monitor averages every value returned here over the epoch (metrics.jsonl).
        return {"loss": loss, "dino_loss": dino, "koleo": koleo, **rotation}

    def on_after_backward(self) -> None:
        self.head.cancel_last_layer_gradients(current_epoch=self.current_epoch)

    def retrieval_encoder(self) -> Encoder:
        return self.teacher if self.export == "teacher" else self.encoder


@register_method("simclr")
class SimCLRModule(SSLModule):
    """SimCLR (Chen et al. 2020): two views of an image attract, the other images of the batch repel."""

    def __init__(self, encoder: Encoder, recipe: DictConfig):
        s = recipe.simclr
        super().__init__(encoder, SimCLRProjectionHead(encoder.dim, s.hidden_dim, s.out_dim), recipe)
        # Under DDP negatives come from every device's batch (a no-op on one device).
        self.criterion = NTXentLoss(temperature=s.temperature, gather_distributed=True)

    def loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """NT-Xent between the two views of each image, against the rest of the batch."""
        z0, z1 = (self.head(self.embed(view)) for view in batch[:2])
        return self.criterion(z0, z1)


@register_method("distill")
class DistillModule(SSLModule):
    """Distillation from the clean image to its visitor photos: the student embeds a studio view and a
    visitor photo (a hard one with ``views.hard.p``) of each image where the frozen starting model embeds
    the clean image with the submission's views (``distill``: the targets, made once before training),
    each view against the batch's other targets (InfoNCE). The embedding itself is trained: no head."""

    needs_index = True

    def __init__(self, encoder: Encoder, recipe: DictConfig, targets: torch.Tensor):
        super().__init__(encoder, nn.Identity(), recipe)
        self.register_buffer("targets", nn.functional.normalize(targets.float(), dim=-1))
        self.temperature = float(recipe.distill.temperature)

    def loss(self, batch: list[torch.Tensor]) -> torch.Tensor:
        """InfoNCE of each view's embedding against the targets of the batch's images (its own the positive)."""
        *views, rows = batch
        targets = self.targets[rows]
        labels = torch.arange(len(rows), device=targets.device)
        return sum(nn.functional.cross_entropy(nn.functional.normalize(self.embed(v), dim=-1) @ targets.T
                                               / self.temperature, labels) for v in views) / len(views)
