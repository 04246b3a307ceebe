"""The calculator: what it computes and what it refuses, how it writes a result, when a text calls it, and
how an assistant message is cut into what the model writes and what the calculator feeds."""

from __future__ import annotations

from fractions import Fraction

import pytest

from scratchlm.data import corpus
from scratchlm.errors import ScratchError
from scratchlm.infer.tools import MAX_EXPRESSION_CHARS, calculator, evaluate, format_number, parse_tools, segments

CALCULATOR = ("calculator",)


@pytest.mark.parametrize(("expression", "value"), [
    ("12+3*4", 24), ("10/4", Fraction(5, 2)), ("(1+2)*-3", -9), ("0.1+0.2", Fraction(3, 10)), (".5*4", 2),
    (" 3 + 4 ", 7), ("--3", 3), ("2*(3+(4-1))", 12), ("7.50*4", 30), ("100-2.5*3", Fraction(185, 2)),
    ("9" * 30, 10**30 - 1), ("(" * 90 + "1" + ")" * 90, 1),
])
def test_arithmetic_is_computed_exactly(expression, value):
    assert evaluate(expression) == value


@pytest.mark.parametrize("expression", [
    "2**8", "7//2", "7%2", "abs(3)", "x+1", "1e5", "3+", "", " ", "1_000", "(", "2(3)", "__import__('os')",
    "3.2.1", "+3", "7/0", "1/(2-2)", "1" + "0" * 30, "99999999999999999999*99999999999999999999",
    "1" + "/3" * 64,  # a denominator of 31 digits
    "1+" * (MAX_EXPRESSION_CHARS // 2) + "1",  # longer than the limit, however simple
])
def test_anything_else_gets_no_result(expression):
    assert evaluate(expression) is None


@pytest.mark.parametrize(("value", "text"), [
    (Fraction(24), "24"), (Fraction(-5), "-5"), (Fraction(5, 2), "2.5"), (Fraction(1, 8), "0.125"),
    (Fraction(2, 3), "0.6667"), (Fraction(-2, 3), "-0.6667"), (Fraction(1, 20000), "0.0001"),
    (Fraction(-1, 100000), "0"), (Fraction(10**29), str(10**29)),
])
def test_results_are_written_as_the_corpus_writes_them(value, text):
    assert format_number(value) == text


@pytest.mark.parametrize(("text", "fed"), [
    ("He pays 3 * 4 = $<<3*4=", "12>>"),
    ("<<10/4=", "2.5>>"),
    ("first <<2+2=4>>4, then <<4*5=", "20>>"),
    ("<<1+<<2=", "2>>"),  # the last opening counts
    ("<<3*4=12>>12", None),  # closed already
    ("<<3*4= ", None),  # not at the "="
    ("a = b =", None),  # no call
    ("<<x+1=", None),
    ("<<2**3=", None),
    ("<<" + "1+" * (MAX_EXPRESSION_CHARS // 2) + "1=", None),
])
def test_a_call_is_answered_when_the_text_ends_at_its_equals_sign(text, fed):
    assert calculator(text) == fed


def replay(pieces: list[tuple[str, bool]]) -> None:
    """Walk the pieces as generation would, character by character: the calculator answers exactly at the end
    of each written piece that a fed piece follows, with that piece, and nowhere else."""
    so_far = ""
    for k, (piece, fed) in enumerate(pieces):
        if fed:
            so_far += piece
            continue
        for j in range(1, len(piece) + 1):
            answer = calculator(so_far + piece[:j])
            last = j == len(piece) and k + 1 < len(pieces) and pieces[k + 1][1]
            assert answer == (pieces[k + 1][0] if last else None)
        so_far += piece


def test_corpus_solutions_are_cut_at_every_call_and_joined_back_unchanged():
    for problem in corpus.math_problems("train", 200):
        answer = problem["answer"]
        pieces = segments(answer, CALCULATOR)
        assert "".join(piece for piece, _ in pieces) == answer
        written = [call.split(">>")[0].split("=")[-1] + ">>" for call in answer.split("<<")[1:]]
        assert [piece for piece, fed in pieces if fed] == written
        replay(pieces)


@pytest.mark.parametrize(("text", "pieces"), [
    ("So 2/3 = <<2/3=0.67>>0.67 is left.", [("So 2/3 = <<2/3=", False), ("0.6667>>", True), ("0.67 is left.", False)]),
    ("<<3+4=7 apples", [("<<3+4=", False), ("7>>", True), ("7 apples", False)]),  # never closed: kept
    ("<<3+4=7\n>>", [("<<3+4=", False), ("7>>", True), ("7\n>>", False)]),  # not closed on its line
    ("<<2**3=8>>8 and <<7/0=0>>0", [("<<2**3=8>>8 and <<7/0=0>>0", False)]),  # no result: nothing fed
    ("<<1+1=2>><<2+2=4>>", [("<<1+1=", False), ("2>>", True), ("<<2+2=", False), ("4>>", True)]),
])
def test_written_results_give_way_to_what_the_calculator_feeds(text, pieces):
    assert segments(text, CALCULATOR) == pieces
    replay(pieces)


def test_without_tools_a_message_is_one_written_piece():
    assert segments("<<3+4=7>>7", ()) == [("<<3+4=7>>7", False)]


def test_tool_names_are_checked():
    assert parse_tools("calculator") == parse_tools(["calculator", "calculator"]) == CALCULATOR
    assert parse_tools("") == parse_tools("none") == ()
    with pytest.raises(ScratchError, match="unknown tool 'abacus'; known tools: calculator"):
        parse_tools("calculator,abacus")
