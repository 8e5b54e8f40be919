"""A symbolic metric's expression tree drawn with Graphviz (``st.graphviz_chart``).

The parsing and the box-drawing text are the schema's (``prunestudio.schema.expression_tree``,
shared with the TUI; display only, nothing is evaluated); this module only turns the tree into
DOT.
"""

from __future__ import annotations

from prunestudio.schema.expression_tree import (
    ExpressionSyntaxError,
    Node,
    parse_expression,
    render_tree,
)

__all__ = ["expression_dot", "render_tree"]

_LEAF_COLOUR = {"W": "#1f77b4", "G": "#d62728", "X": "#2ca02c", "D": "#9467bd"}


def expression_dot(text: str) -> str:
    """Graphviz DOT of the expression tree (operators as ellipses, leaves W / G / X as coloured
    boxes); a one-node graph naming the problem when the text does not parse."""
    try:
        root = parse_expression(text)
    except ExpressionSyntaxError as exc:
        label = f"{text}\\n(not a tree: {exc})".replace('"', "'")
        return f'digraph {{ n0 [shape=note, label="{label}"]; }}'
    lines = ["digraph {", '  node [fontname="Helvetica"];', "  rankdir=TB;"]
    counter = 0

    def emit(n: Node) -> str:
        nonlocal counter
        name = f"n{counter}"
        counter += 1
        label = n.name.replace('"', "'")
        if n.children:
            lines.append(f'  {name} [label="{label}", shape=ellipse];')
        else:
            colour = _LEAF_COLOUR.get(n.name, "#7f7f7f")
            lines.append(f'  {name} [label="{label}", shape=box, style=filled, '
                         f'fillcolor="{colour}", fontcolor=white];')
        for child in n.children:
            lines.append(f"  {name} -> {emit(child)};")
        return name

    emit(root)
    lines.append("}")
    return "\n".join(lines)
