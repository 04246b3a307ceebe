"""Tools the engine runs for a sequence while it generates: a calculator for GSM8K-style annotations.

The corpus's solutions (and GSM8K's) write each step's arithmetic as ``<<expression=result>>result``.
With the calculator on, the moment the generated text ends with ``<<expression=`` the engine evaluates
the expression and feeds ``result>>`` into the sequence as forced tokens: they enter the KV cache as a
prompt does, are never sampled, and are flagged in the output (RequestOutput.forced), so RL can leave
them out of its loss. The model then goes on writing (the corpus repeats the result after ``>>``).
An expression the calculator refuses, or cannot compute (division by zero), gets nothing: the model
writes the result itself, as it would without the tool.

Training sees what generation sees: the chat renderer splits an assistant message with `segments`, by
the same rule and in the same places, into the text the model writes (trained) and what the tool feeds
(never trained), and encodes each piece on its own, as the engine encodes what it feeds.

The evaluator is safe by construction: the expression is at most MAX_EXPRESSION_CHARS of digits,
``+ - * / ( ) .`` and spaces, parsed by `ast` into numbers, the four operations and unary minus
(nothing else: no names, no calls, no power), and computed exactly in fractions whose numerators and
denominators stay below MAX_DIGITS digits. These limits bound the work to microseconds, which is the
time limit: a clock would make the same request give other tokens on a busier machine.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Callable, Sequence
from fractions import Fraction

from scratchlm.errors import ScratchError

MAX_EXPRESSION_CHARS = 200
MAX_DIGITS = 30  # of any intermediate numerator or denominator; beyond it the calculator gives no result
DECIMALS = 4  # a result that is not an integer is written with at most this many decimals
OPEN, CLOSE, EQUALS = "<<", ">>", "="
# A calculator call the text has just closed: "<<" and an expression at the very end, followed by "=".
_CALL = re.compile(rf"<<([0-9+\-*/(). ]{{1,{MAX_EXPRESSION_CHARS}}})=\Z")
_TAIL = MAX_EXPRESSION_CHARS + len(OPEN) + len(EQUALS)
_WRITTEN_RESULT = re.compile(r"[^<>=\n]*>>")  # a message's own result after a call, closed on its line
_LIMIT = 10**MAX_DIGITS
_OPERATIONS: dict[type, Callable[[Fraction, Fraction], Fraction]] = {
    ast.Add: lambda a, b: a + b, ast.Sub: lambda a, b: a - b,
    ast.Mult: lambda a, b: a * b, ast.Div: lambda a, b: a / b,
}


class _Refused(Exception):
    """The expression is outside what the calculator computes."""


def evaluate(expression: str) -> Fraction | None:
    """The exact value of an arithmetic expression, or None when it holds anything but numbers, + - * / ( )
    and unary minus, is too long, grows past MAX_DIGITS, or divides by zero."""
    if not 0 < len(expression) <= MAX_EXPRESSION_CHARS or not set(expression) <= set("0123456789+-*/(). "):
        return None
    try:
        tree = ast.parse(expression.strip(), mode="eval")
        return _value(tree.body, expression.strip())
    except (SyntaxError, ValueError, RecursionError, ZeroDivisionError, _Refused):
        return None


def _value(node: ast.AST, source: str) -> Fraction:
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        # From the literal's own digits: 0.1 is one tenth, not the float nearest to it.
        value = Fraction(source[node.col_offset:node.end_col_offset])
    elif isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        value = -_value(node.operand, source)
    elif isinstance(node, ast.BinOp) and type(node.op) in _OPERATIONS:
        value = _OPERATIONS[type(node.op)](_value(node.left, source), _value(node.right, source))
    else:
        raise _Refused
    if abs(value.numerator) >= _LIMIT or value.denominator >= _LIMIT:
        raise _Refused
    return value


def format_number(value: Fraction) -> str:
    """As the corpus writes a result: an integer without a decimal point, else rounded to at most DECIMALS
    decimals with trailing zeros dropped (1/4 -> 0.25, 2/3 -> 0.6667)."""
    if value.denominator == 1:
        return str(value.numerator)
    units = int(abs(value) * 10**DECIMALS + Fraction(1, 2))  # rounded half away from zero
    whole, decimals = divmod(units, 10**DECIMALS)
    sign = "-" if value < 0 and units else ""
    return f"{sign}{whole}.{decimals:0{DECIMALS}d}".rstrip("0").rstrip(".")


def calculator(text: str) -> str | None:
    """What the calculator feeds after text: `result>>` when text ends with a call ``<<expression=`` that it
    computes, else None."""
    if not text.endswith(EQUALS):
        return None
    call = _CALL.search(text[-_TAIL:])
    if call is None:
        return None
    value = evaluate(call.group(1))
    return None if value is None else format_number(value) + CLOSE


TOOLS: dict[str, Callable[[str], str | None]] = {"calculator": calculator}


def parse_tools(names: str | Sequence[str]) -> tuple[str, ...]:
    """Tool names from a flag ("calculator", comma-separated; "" or "none": no tool) or a list, checked."""
    if isinstance(names, str):
        names = [] if names.strip().lower() == "none" else [n.strip() for n in names.split(",") if n.strip()]
    unknown = [n for n in names if n not in TOOLS]
    if unknown:
        raise ScratchError(f"unknown tool '{unknown[0]}'; known tools: {', '.join(TOOLS)}")
    return tuple(dict.fromkeys(names))


def answer(text: str, tools: Sequence[str]) -> str | None:
    """What the first of the tools that answers feeds after text (the generated text so far), if any."""
    for name in tools:
        fed = TOOLS[name](text)
        if fed is not None:
            return fed
    return None


def segments(text: str, tools: Sequence[str]) -> list[tuple[str, bool]]:
    """An assistant message cut as generation with the tools produces it: (piece, fed by a tool) in order.

    Where the engine would feed a result after a call, what the tool feeds takes the place of the
    message's own result and its ">>" (the same text, unless the message rounded otherwise); a message
    that does not close the call on that line keeps all of its text after the fed result. The pieces
    joined are the text that generation with the tools gives when the model writes every piece that is
    not fed.
    """
    if not tools:
        return [(text, False)]
    pieces: list[tuple[str, bool]] = []
    so_far = ""  # the text as generated up to the current piece: earlier pieces, fed results included
    start = 0  # where the current written piece starts in text
    for equals in re.finditer(EQUALS, text):
        end = equals.end()
        if end <= start:
            continue  # inside a result already replaced
        fed = answer(so_far + text[start:end], tools)
        if fed is None:
            continue
        pieces += [(text[start:end], False), (fed, True)]
        so_far += text[start:end] + fed
        written = _WRITTEN_RESULT.match(text, end)
        start = written.end() if written else end
    pieces.append((text[start:], False))
    return [(piece, fed) for piece, fed in pieces if piece]
