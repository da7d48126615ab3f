"""Pruning passes whose savings are real: smaller weights, smaller shapes, faster kernels.

    prune_channels{ratio=0.3,criterion=l1|taylor}   structured channels/heads, shapes shrink
    prune_magnitude{sparsity=0.5,scope=global|layer} unstructured zeros (CSR bytes reported)
    prune_nm{n=2,m=4}                               N:M rows -> sparse.linear_nm (values+indices)
    lowrank{params=0.5|rank_ratio=0.5|energy=0.95}  SVD: one linear/conv -> two thinner ones
    finetune{steps=..,lr=..,distill=true,zoo=NAME}  recovery training through the torch backend

Every prune pass stashes the unpruned graph in graph.meta["prune.teacher"] (in memory) so a
later `finetune{distill=true}` can distil from its logits.
"""

from . import channels, finetune, lowrank, magnitude, nm  # noqa: F401  (registers the passes)
