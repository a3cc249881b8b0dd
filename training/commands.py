"""The subcommands beyond data-info; each is a thin layer over an importable function."""

from training.cli import not_built

not_built("train", "issue 3: training module", "fine-tune R-Gen, Q->A or Q->RA with LoRA")
not_built("augment", "issue 4: Stage 2 and review", "Stage 2: write a reasoning for every training row")
not_built("export", "issue 4: Stage 2 and review", "build the augmented training set from the review store")
not_built("evaluate", "issue 3: training module", "evaluate Q->A / Q->RA runs on a split")
not_built("experiment", "issue 3: training module", "run the paper end to end from a YAML config")
not_built("push", "issue 6: Hub and Spaces", "push a run or dataset to the Hugging Face Hub")
not_built("bench", "issue 7: performance", "benchmark generation, training and prediction")
