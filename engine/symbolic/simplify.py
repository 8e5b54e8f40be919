"""Opposing Operation Simplification and the structural dedup key.

`simplify` rewrites a tree bottom-up to a fixpoint with rules that are *exact* in IEEE fp32
arithmetic under this package's op definitions: the simplified tree computes bit-identical
values on finite inputs, except that it may avoid an overflow or underflow of a removed x·x
(``sqrt(sqr(x))`` is |x| exactly in radix 2 whenever x·x is a normal number). Then the operands of
the commutative ops add and mul are put in a canonical order (by their text).

Rules (x, y any subtrees; "x ≥ 0" is the static sign analysis of `is_nonneg`):

==========================================  ===========================  ========================
pattern                                     result                       why exact
==========================================  ===========================  ========================
skip(x)                                     x                            identity
neg(neg(x))                                 x                            negation is exact
abs(neg(x))                                 abs(x)
abs(x), x ≥ 0                               x                            e.g. abs(W), abs(sqr(x))
sqr(neg(x)), sqr(abs(x))                    sqr(x)                       (−x)² = |x|² = x²
sqrt/log(neg(x)), sqrt/log(abs(x))          sqrt/log(x)                  both read |x|
sqrt(sqr(x))                                abs(x)                       radix-2 theorem
mul(x, x)                                   sqr(x)                       sqr is x·x
sub(x, neg(y))                              add(x, y)
add(x, neg(y)), add(neg(y), x)              sub(x, y)
neg(sub(x, y))                              sub(y, x)                    rounding is symmetric
sub(neg(x), neg(y))                         sub(y, x)
mul(neg(x), neg(y))                         mul(x, y)
mul(neg(x), y), mul(x, neg(y))              neg(mul(x, y))               negation moves outward
div(neg(x), y)                              neg(div(x, y))               so it can cancel
sub(neg(x), y)                              neg(add(x, y))
pow/norm1/norm2(neg(x))                     neg(pow/norm1/norm2(x))      odd ops
==========================================  ===========================  ========================

Not simplified, on purpose: ``exp(log(x))`` is |x|+ε and ``log(exp(x))`` is x only on about
[−18, 50] (the ε guard and the exp clamp make them non-inverse); ``div(neg(x), neg(y))`` differs
at y = 0 (the guard adds +ε for both 0 and −0); ``tanh``/``zsn`` of neg depend on the library's
symmetry; ``sub(x, x)`` and ``div(x, x)`` need constants, which the leaf set does not have.

``approximate=True`` adds ``sqr(sqrt(x)) → abs(x)``: equal up to one rounding of the square root
(relative error ≤ 2⁻²³), which can only reorder scores that were within an ulp. The dedup key
uses it; the exact default is what the value-preservation tests check bit for bit.
"""

from __future__ import annotations

from prunestudio.engine.symbolic.grammar import COMMUTATIVE
from prunestudio.engine.symbolic.tree import Node, op, to_text

_NONNEG_OPS = frozenset({"sqr", "abs", "sqrt", "exp", "mms"})  # ≥ 0 whatever the input
_SIGN_KEEPING = frozenset({"tanh", "pow", "skip", "norm1", "norm2", "add", "mul", "div"})
_ODD = frozenset({"pow", "norm1", "norm2"})


def is_nonneg(tree: Node) -> bool:
    """Statically non-negative in fp32 (leaves W, G, X are ≥ 0 by construction)."""
    if tree.is_leaf or tree.op in _NONNEG_OPS:
        return True
    if tree.op in _SIGN_KEEPING:
        return all(is_nonneg(c) for c in tree.children)
    return False  # neg, log, zsn, sub


def _is(tree: Node, name: str) -> bool:
    return tree.op == name


def _rewrite(t: Node, approximate: bool) -> Node | None:
    """One rule applied at the root of `t`, or None."""
    name, ch = t.op, t.children
    if name == "skip":
        return ch[0]
    if len(ch) == 1:
        (x,) = ch
        if name == "neg" and _is(x, "neg"):
            return x.children[0]
        if name == "neg" and _is(x, "sub"):
            return op("sub", x.children[1], x.children[0])
        if name == "abs":
            if _is(x, "neg"):
                return op("abs", x.children[0])
            if is_nonneg(x):
                return x
        if name in ("sqr", "sqrt", "log") and (_is(x, "neg") or _is(x, "abs")):
            return op(name, x.children[0])
        if name == "sqrt" and _is(x, "sqr"):
            return op("abs", x.children[0])
        if approximate and name == "sqr" and _is(x, "sqrt"):
            return op("abs", x.children[0])
        if name in _ODD and _is(x, "neg"):
            return op("neg", op(name, x.children[0]))
        return None
    if len(ch) != 2:
        return None
    a, b = ch
    an, bn = _is(a, "neg"), _is(b, "neg")
    if name == "mul":
        if a == b:
            return op("sqr", a)
        if an and bn:
            return op("mul", a.children[0], b.children[0])
        if an:
            return op("neg", op("mul", a.children[0], b))
        if bn:
            return op("neg", op("mul", a, b.children[0]))
    elif name == "add":
        if bn:
            return op("sub", a, b.children[0])
        if an:
            return op("sub", b, a.children[0])
    elif name == "sub":
        if an and bn:
            return op("sub", b.children[0], a.children[0])
        if bn:
            return op("add", a, b.children[0])
        if an:
            return op("neg", op("add", a.children[0], b))
    elif name == "div" and an:
        return op("neg", op("div", a.children[0], b))
    return None


def _ordered(t: Node) -> Node:
    if t.op in COMMUTATIVE:
        a, b = t.children
        if to_text(b) < to_text(a):
            return Node(t.op, (b, a))
    return t


def simplify(tree: Node, *, approximate: bool = False) -> Node:
    """Apply the rules bottom-up to a fixpoint, then order commutative operands.

    Terminates: every rule shrinks the tree or moves a ``neg`` closer to the root.
    """
    t = Node(tree.op, tuple(simplify(c, approximate=approximate) for c in tree.children))
    rewritten = _rewrite(t, approximate)
    if rewritten is not None:
        return simplify(rewritten, approximate=approximate)
    return _ordered(t)


def canonical_key(tree: Node) -> str:
    """Structural dedup key: canonical text after (approximate) simplification.

    Two trees with the same key compute the same metric (up to an ulp); a population keyed on it
    holds distinct metrics.
    """
    return to_text(simplify(tree, approximate=True))
