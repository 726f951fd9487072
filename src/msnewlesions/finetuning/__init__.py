"""Fine-tuning a model on reviewed pairs: the loop that turns a reader's review into a better model.

* :mod:`.references`: the reviewed pairs (a manifest with a ``new_lesions`` column);
* :mod:`.prepared`: each pair made once into the network's inputs and its label there, its
  baseline made into anatomy for synthetic pairs, its lesions into shapes;
* :mod:`.folds`: the folds (leave one pair out, or a held-out split) and the final run, each an
  nnU-Net dataset of real and synthetic pairs trained from the base model's weights;
* :mod:`.operating_point`: threshold and minimum lesion size chosen on held-out probabilities;
* :mod:`.run`: the whole job, resumable, and the model folder it writes (with its card).
"""

from msnewlesions.finetuning.references import ReviewedPair, read_reviewed_pairs
from msnewlesions.finetuning.run import FinetuneOptions, FinetuneResult, finetune

__all__ = [
    "FinetuneOptions",
    "FinetuneResult",
    "ReviewedPair",
    "finetune",
    "read_reviewed_pairs",
]
