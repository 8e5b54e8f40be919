"""Evaluate an expression tree on tensors: the engine's own vectorised interpreter (no ``eval``).

Evaluation is a post-order walk calling the ops of `ops.py` in fp32 on whole tensors. Only the
intermediates on the current root-to-leaf path are alive at once (no memo table), so peak memory
is about depth × one layer's score, not size × score. X-only subtrees stay 1 × in rows and are
broadcast when they meet W or G; the result is always a contiguous (out, in) fp32 tensor.
"""

from __future__ import annotations

import torch
from prunestudio.engine.symbolic.grammar import is_constant
from prunestudio.engine.symbolic.ops import OPS
from prunestudio.engine.symbolic.tree import Node, leaves_used


def _check_leaf(name: str, t: torch.Tensor) -> None:
    if bool((t < 0).any()):
        raise ValueError(f"leaf {name} must be non-negative (W is |weight|); got negative entries")


def _column_leaf(name: str, t: torch.Tensor | None, W: torch.Tensor, what: str) -> torch.Tensor:
    """A per-input-column leaf (X, D) as a (1, in) fp32 row on W's device."""
    if t is None:
        raise ValueError(f"the expression reads {name} but no {what} ({name}) were given")
    if t.numel() != W.shape[1]:
        raise ValueError(f"{name} has {t.numel()} entries; W has {W.shape[1]} input columns")
    return t.to(W.device).float().reshape(1, -1)


def leaf_tensors(tree: Node, W: torch.Tensor, X: torch.Tensor | None = None,
                 G: torch.Tensor | None = None, D: torch.Tensor | None = None, *,
                 check_sign: bool = True) -> dict[str, torch.Tensor]:
    """Validate and normalise the leaves the tree reads: fp32, on W's device, X and D as
    (1, in) rows."""
    if W.dim() != 2:
        raise ValueError(f"W must be a 2-D (out, in) tensor, got shape {tuple(W.shape)}")
    used = leaves_used(tree)
    env = {"W": W.float()}
    if "X" in used:
        env["X"] = _column_leaf("X", X, W, "input statistics")
    if "D" in used:
        env["D"] = _column_leaf("D", D, W, "inverse-Hessian diagonal")
    if "G" in used:
        if G is None:
            raise ValueError("the expression reads G but no gradient statistics (G) were given")
        if tuple(G.shape) != tuple(W.shape):
            raise ValueError(f"G has shape {tuple(G.shape)}; W has {tuple(W.shape)}")
        env["G"] = G.to(W.device).float()
    if check_sign:
        for name in used | {"W"}:
            _check_leaf(name, env[name])
    return env


def _eval(tree: Node, env: dict[str, torch.Tensor]) -> torch.Tensor:
    if tree.is_leaf:
        if is_constant(tree.op):  # a 0-d fp32 tensor, broadcast by the ops
            return torch.tensor(float(tree.op), dtype=torch.float32, device=env["W"].device)
        return env[tree.op]
    return OPS[tree.op].fn(*(_eval(c, env) for c in tree.children))


@torch.no_grad()
def evaluate(tree: Node, *, W: torch.Tensor, X: torch.Tensor | None = None,
             G: torch.Tensor | None = None, D: torch.Tensor | None = None,
             check_sign: bool = True) -> torch.Tensor:
    """Score of every weight, (out, in) fp32.

    W = |weight| (out, in); X = input squared-norm sums, (in,) or (1, in); G = gradient l2
    aggregate (out, in); D = the diagonal of the upper Cholesky factor of the damped inverse
    Hessian, (in,) or (1, in) (SparseGPT's score divides w² by its square). All leaves must be
    non-negative. X, G and D are needed only when the tree reads them, and are moved to W's
    device. `check_sign=False` skips the non-negativity check (a pass over every leaf) for
    callers whose leaves are non-negative by construction (the symbolic method: W = |weight|,
    X, G and D from the engine's statistics).
    """
    env = leaf_tensors(tree, W, X, G, D, check_sign=check_sign)
    out = _eval(tree, env)
    if any(out.data_ptr() == t.data_ptr() for t in env.values()):
        out = out.clone()  # `W` or `skip(W)`: never hand back the caller's own tensor
    return out.expand(W.shape).contiguous()
