"""python -m adapt.pseudolabel [RECIPE.yaml] [key=value ...] | --resume RUN_DIR

Stage 2: rounds of mine -> refine. Each round embeds the whole pool with the current model, mines
mutual-nearest-neighbour pairs and filters them (adapt/mining.py), writes them with their scores to
RUN/roundN/pairs.csv, and refines the model contrastively on the kept pairs (adapt/refine.py). The
start is ``model.weights``: zero-shot weights, an encoder file, or a stage-1 run directory. With a
labeled set in the pool, every round reports the precision and recall of its pairs and Hit@k of the
whole pool before and after. With no data given it runs on the sample museum. ``--resume`` keeps
the rounds that finished, continues an interrupted round from its last epoch checkpoint (its pairs
are mined again from the same model, so they are the same) and runs the rest.
"""

from __future__ import annotations

import logging
import sys
import time
from pathlib import Path

import pytorch_lightning as pl
from omegaconf import DictConfig, OmegaConf

from adapt.config import PseudolabelRecipe
from adapt.mining import accounting, labeled_rows, mine_pairs, true_pairs, write_pairs
from adapt.refine import PairViewDataset
from core.base.errors import MissingInputError, command_line
from core.base.runs import RunDir
from core.data.pool import Pool, recipe_pool
from core.model.backbone import EncoderSpec, build_encoder
from core.model.embed import embed_images, recipe_reader
from core.pixels.images import make_reader
from core.pixels.verify import Verifier
from core.post import PostProcessor
from core.recipe import cli_parser, load_recipe, resumable_recipe, to_dict
from core.scoring import labeled_scores, post_applied
from core.vectors.metrics import HITS_LABEL, format_hits
from ssl.augment import view_maker
from ssl.methods import SimCLRModule
from ssl.monitor import EvalMonitor
from ssl.training import checkpoint_identity, finish, fit, quiet_known_warnings, resume_epoch
from ssl.tuning import configure_tuning

log = logging.getLogger(__name__)

DEFAULT_RECIPE = Path(__file__).resolve().parent.parent / "recipes" / "pseudolabel.yaml"


def _start_weights(weights: str | None) -> str | None:
    """A stage-1 run directory means its encoder file (unset stays unset: building the model says so)."""
    if weights is None:
        return None
    path = Path(weights)
    if path.is_dir():
        if not (path / "encoder.pt").is_file():
            raise MissingInputError(f"model.weights={weights} is a folder without encoder.pt. Fix: give a finished "
                                    "run of python -m ssl.pretrain, an encoder file or weights")
        return str(path / "encoder.pt")
    return weights


def _full_pool(recipe: DictConfig, pool: Pool, weights: str, desc: str):
    encoder = build_encoder(EncoderSpec.from_config(OmegaConf.merge(recipe.model, {"weights": weights})))
    emb = embed_images(encoder, pool.paths, pool.names, recipe.embed, reader=recipe_reader(recipe, encoder),
                       skip_corrupt=recipe.data.skip_corrupt, desc=desc)
    return encoder, emb


def _pool_scores(recipe: DictConfig, pool: Pool, emb) -> dict | None:
    """The pool's labeled figures after the recipe's post steps, the raw ones under ``raw``."""
    if not pool.labeled:
        return None
    return labeled_scores(pool, emb, post_applied(PostProcessor(recipe), emb, pool.paths_of(emb.names)))[1]


def _round_folder(run: RunDir, n: int) -> Path:
    return run.path / f"round{n}"


def _check_round_checkpoint(run: RunDir, n: int) -> None:
    """Before any work: an interrupted round n's checkpoint must be safe and its own (``resume_epoch``),
    checked against the recipe its folder recorded (which holds the batch size the round trained with)."""
    folder = _round_folder(run, n)
    if (folder / "checkpoints" / "last.ckpt").is_file() and (folder / "recipe.yaml").is_file():
        resume_epoch(RunDir(folder), checkpoint_identity(load_recipe(folder / "recipe.yaml", schema=PseudolabelRecipe),
                                                         "refine"))


def _round(recipe: DictConfig, run: RunDir, pool: Pool, weights: str, n: int, verifier: Verifier | None,
           trust_unverified: bool | None, resume: bool, callbacks: tuple[pl.Callback, ...]) -> dict:
    started = time.perf_counter()
    # Each round draws from its own seed, so a resumed run's round n is the uninterrupted run's.
    pl.seed_everything(int(recipe.seed) + n - 1, workers=True, verbose=False)
    sub = OmegaConf.merge(recipe, {"run_dir": str(_round_folder(run, n)), "model": {"weights": weights}})
    resume = resume and (_round_folder(run, n) / "checkpoints" / "last.ckpt").is_file()
    with RunDir.create(sub, "refine") as round_run:
        encoder, emb = _full_pool(recipe, pool, weights, f"round {n}: embed pool")
        paths = pool.paths_of(emb.names)
        table = mine_pairs(emb.vectors, emb.names, paths, recipe.mining, verifier, bool(recipe.embed.progress),
                           trust_unverified)
        truth = true_pairs(pool, emb.names)
        write_pairs(table, truth, round_run.path / "pairs.csv")
        mined = {**accounting(table, truth, labeled_rows(pool, emb.names)), **table.attrs}
        kept = table[table["kept"]]
        before = _pool_scores(recipe, pool, emb)
        record = {"round": n, "start": weights, "mining": mined, "pool_before": before}
        if len(kept) < 2:
            log.warning("round %d kept %d pairs (see %s): nothing to refine on, so the model stays as it is. Fix: "
                        "loosen mining.min_similarity / verify.min_inliers, or start from a better model", n,
                        len(kept), round_run.path / "pairs.csv")
            return {**record, "encoder": weights, "refined": False, "time_s": round(time.perf_counter() - started, 1)}
        if len(kept) < int(sub.train.batch_size):
            log.warning("round %d kept %d pairs, fewer than train.batch_size=%d: training on batches of %d", n,
                        len(kept), sub.train.batch_size, len(kept))
            sub.train.batch_size = len(kept)
            round_run.snapshot(sub)  # the snapshot says what was trained
        module = SimCLRModule(configure_tuning(encoder.train(), sub.tune), sub)
        dataset = PairViewDataset([(paths[a], paths[b]) for a, b in zip(kept["a"], kept["b"], strict=True)],
                                  make_reader(sub.data, int(sub.views.max_side)),
                                  view_maker(sub, encoder.spec.mean, encoder.spec.std), int(sub.seed))
        monitor = EvalMonitor(sub, round_run, pool)
        identity = checkpoint_identity(sub, "refine")
        _, images = fit(sub, round_run, module, dataset, [monitor, *callbacks], identity,
                        resume_epoch(round_run, identity) if resume else None)
        summary = finish(sub, round_run, module, monitor.history, started, images, resumed=resume)
        record.update({"encoder": summary["encoder"], "refined": True, "monitor_before": summary["first"],
                       "monitor_after": summary["last"], "time_s": round(time.perf_counter() - started, 1)})
        log.info("round %d: %d pairs kept of %d candidates%s", n, len(kept), len(table),
                 f", precision {mined['precision']:.3f} (over the pairs the labels can judge: "
                 f"{_number(mined['labeled_precision'])}), recall {mined['recall']:.3f}" if truth else "")
        return record


def pseudolabel(recipe: DictConfig, resume: bool = False, callbacks: tuple[pl.Callback, ...] = ()) -> dict:
    """Run ``recipe.rounds`` rounds of mine -> refine; write RUN/metrics.json and metrics.jsonl.

    ``resume``: keep the rounds RUN/metrics.jsonl records as finished and go on from there (an
    interrupted round from its last checkpoint). ``callbacks``: extra Lightning callbacks for every round.
    """
    started = time.perf_counter()
    with RunDir.create(recipe, "pseudolabel") as run, run.logging_to_file(), quiet_known_warnings():
        rounds = run.read_metrics_lines() if resume else []
        if resume:  # before any work
            _check_round_checkpoint(run, len(rounds) + 1)
        pool = recipe_pool(recipe)
        weights = _start_weights(recipe.model.weights)
        verifier = Verifier.from_config(recipe.verify) if recipe.mining.verify else None
        run.write_metrics_lines(rounds)
        if rounds:
            # A refined round's encoder is in its folder, wherever the run folder has moved since.
            last = rounds[-1]
            weights = str(_round_folder(run, last["round"]) / "encoder.pt") if last["refined"] else last["encoder"]
            log.info("resuming after round %d of %d (%s)", len(rounds), recipe.rounds, weights)
        for n in range(len(rounds) + 1, int(recipe.rounds) + 1):
            if rounds and not rounds[-1]["refined"]:
                break
            # Round 1 decides from its candidates whether unverified ones are kept; the rest follow it.
            trust = rounds[0]["mining"].get("trust_unverified") if rounds else None
            record = _round(recipe, run, pool, weights, n, verifier, trust, resume, callbacks)
            run.append_metrics_line(record)
            rounds.append(record)
            weights = record["encoder"]
        if not rounds[-1]["refined"]:  # the model did not change since the round embedded the pool
            after = rounds[-1]["pool_before"]
        elif pool.labeled:
            _, emb = _full_pool(recipe, pool, weights, "final model: embed pool")
            after = _pool_scores(recipe, pool, emb)
        else:  # no labels to score the final model on: a pass over the pool saved (97 s per 1,000 images, 2 CPU cores)
            after = None
        summary = {"rounds": rounds, "encoder": weights, "pool_after": after, "recipe": to_dict(recipe),
                   "time_s": {"total": round(time.perf_counter() - started, 1)}, "run_dir": str(run.path)}
        run.write_metrics(summary)
        return summary


def _number(value: float | int | None) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def _hits(figures: dict | None) -> str:
    """Hit@k after the post steps, and before them in brackets where steps ran."""
    if not figures:
        return "-"
    return format_hits(figures) + (f" ({format_hits(figures['raw'])} raw)" if figures.get("raw") else "")


def _format(summary: dict) -> str:
    # "verified": share of the candidates verification passed (what decides trust_unverified_at).
    # "unjudged": kept pairs of two unlabeled images, counted as wrong by "precision" and left out
    # of "labeled precision".
    columns = (("verified_share", "verified", 10), ("kept", "kept", 6), ("kept_wrong", "wrong", 7),
               ("kept_unjudged", "unjudged", 10), ("precision", "precision", 11), ("labeled_precision", "labeled", 10),
               ("recall", "recall", 8))
    header = "".join(f"{label:>{w}}" for _, label, w in columns)
    lines = [f"{'round':<6}{header}   {HITS_LABEL} of the pool before (raw)"]
    for r in summary["rounds"]:
        m, b = r["mining"], r["pool_before"]
        cells = "".join(f"{_number(m.get(k)):>{w}}" for k, _, w in columns)
        lines.append(f"{r['round']:<6}{cells}   {_hits(b)}")
    a = summary["pool_after"]
    if a:
        lines.append(f"after the last round: {HITS_LABEL} {_hits(a)}")
    lines.append(f"encoder: {summary['encoder']}")
    return "\n".join(lines)


@command_line
def main(argv: list[str]) -> int:
    parser = cli_parser("python -m adapt.pseudolabel", __doc__.strip().split("\n\n")[1].split("\n")[0])
    parser.add_argument("--resume", metavar="RUN_DIR", help="continue an interrupted run in RUN_DIR, with its recipe")
    args = parser.parse_args(argv)
    recipe = resumable_recipe(args.args, args.resume, PseudolabelRecipe, DEFAULT_RECIPE, "adapt.pseudolabel")
    summary = pseudolabel(recipe, resume=bool(args.resume))
    print(_format(summary))
    return 0


if __name__ == "__main__":
    sys.exit(main())
