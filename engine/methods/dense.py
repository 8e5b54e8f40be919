"""The unpruned model: the reference row of every study."""

from prunestudio.engine.methods.base import PruningMethod


class Dense(PruningMethod):
    name = "dense"
    description = "no pruning (reference)"

    def prune_layer(self, lin, target, inputs, options) -> None:  # never called
        return None
