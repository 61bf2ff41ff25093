"""python -m eval [RECIPE.yaml | MODEL_FILE] [key=value ...]

Embeds the pool (data.labeled sets + data.distractors folders + data.root), prints Hit@1/3/10, mAP
and MRR per labeled set, per ``set`` column and overall, and for held-out synthetic queries, and
writes RUN_DIR/metrics.json. With no data given it evaluates on the built-in sample museum.
"""

import sys

from core.base.errors import command_line
from core.recipe import parse_cli
from eval.evaluate import evaluate, format_table


@command_line
def main(argv: list[str]) -> int:
    recipe = parse_cli(argv, "python -m eval", __doc__.strip().split("\n")[0], accept_model_file=True)
    metrics = evaluate(recipe)
    print(format_table(metrics))
    print(f"\nmetrics: {metrics['run_dir']}/metrics.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
