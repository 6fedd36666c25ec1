r"""InfoNCE with in-batch negatives (van den Oord et al., arXiv:1807.03748; CLIP's symmetric form,
Radford et al., arXiv:2103.00020) on the fused softmax cross-entropy.

Row :math:`i` of ``query`` matches row :math:`i` of ``key``; every other key in the batch is a
negative. With :math:`\hat q, \hat k` the rows L2-normalised (``normalize=True``, the default) or
as given:

.. math::
    z = \hat q\,\hat k^\top / \tau \in \mathbb{R}^{B\times B},\qquad
    \ell_i = \mathrm{lse}_j(z_{ij}) - z_{ii},

and ``symmetric=True`` averages this with the same loss on :math:`z^\top` (keys classifying
queries). The similarity is one ``paddle.matmul`` (whose backward gives ``query`` and ``key`` their
gradients); the cross-entropy is :func:`paddle_ops.nn.functional.cross_entropy`, which saves only
one fp32 log-sum-exp per row, never the [B, B] softmax.
"""

import paddle
from paddle.jit.marker import unified

from ... import _checks
from .softmax_ce import cross_entropy


@unified
def info_nce(query, key, temperature=0.07, reduction='mean', symmetric=False, normalize=True,
             name=None):
    r"""InfoNCE / NT-Xent loss with in-batch negatives.

    Args:
        query: ``[B, D]`` float32/float64/float16/bfloat16 embeddings.
        key: ``[B, D]`` embeddings of the same dtype; ``key[i]`` is the positive of ``query[i]``.
        temperature: finite, > 0; the similarities are divided by it.
        reduction: ``'mean'`` (over the B rows), ``'sum'`` or ``'none'`` (``[B]``).
        symmetric: also classify queries from keys and average both losses (CLIP).
        normalize: L2-normalise the rows of both inputs first (``paddle.nn.functional.normalize``,
            epsilon 1e-12), so that similarities are cosines as in SimCLR and CLIP. Pass False for
            embeddings that are already normalised or when raw dot products are wanted.

    Returns:
        fp32 loss (fp64 for fp64 inputs): ``[B]`` for ``'none'``, else a scalar. Both ``query``
        and ``key`` get gradients (in their dtype). float16/bfloat16 embeddings are widened to
        fp32 before the normalisation and the matmul (Paddle has no 16-bit CPU kernels for them).
    """
    _checks.check_reduction(reduction)
    _checks.check_float(query, "query")
    _checks.check_float(key, "key")
    temperature = _checks.in_acc_range(_checks.option(temperature, "temperature", 0.0,
                                                      low_open=True),
                                       "temperature", query, reciprocal=True)
    qs, ks = list(query.shape), list(key.shape)
    if len(qs) != 2 or len(ks) != 2:
        raise ValueError(f"query and key must be 2-D [batch, dim], got shapes {qs} and {ks}")
    if not _checks.dims_match(qs, ks):
        raise ValueError(f"query shape {qs} and key shape {ks} must be equal (row i of key is "
                         "the positive of row i of query)")
    if _checks.dtype_name(query) != _checks.dtype_name(key):
        raise TypeError(f"query ({_checks.dtype_name(query)}) and key ({_checks.dtype_name(key)}) "
                        "must have the same dtype")
    if _checks.dtype_name(query) in ("float16", "bfloat16"):
        # Paddle 3.3.1 has no 16-bit CPU kernels for p_norm or matmul: the similarity is computed
        # in fp32 (a copy of B x D values; the gradients flow back through the casts).
        query, key = query.astype("float32"), key.astype("float32")
    if normalize:
        query = paddle.nn.functional.normalize(query, axis=-1)
        key = paddle.nn.functional.normalize(key, axis=-1)
    # 1 / T scales the [B, D] query rather than the [B, B] product: one pass over fewer values.
    logits = paddle.matmul(query * (1.0 / temperature), key, transpose_y=True)
    # Row i's target is column i. A batch size known when tracing (dygraph, to_static) gives a
    # label of static shape [B]; a static-graph -1 takes the size at run time.
    batch = query.shape[0]
    if isinstance(batch, int) and batch >= 0:
        labels = paddle.arange(batch, dtype="int64")
    else:
        labels = paddle.arange(paddle.shape(query)[0], dtype="int64")
    loss = cross_entropy(logits, labels, reduction=reduction)
    if symmetric:
        loss = 0.5 * (loss + cross_entropy(logits.transpose([1, 0]), labels,
                                           reduction=reduction))
    return loss
