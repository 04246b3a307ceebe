"""The embedded preference pairs: the better reply is right by the rules of the corpus's world, the worse one is
wrong in exactly the way its kind says, and pairs are a pure function of (split, n, seed)."""

from __future__ import annotations

import re

import pytest

from scratchlm.data import corpus
from scratchlm.data.corpus.preferences import KINDS, _story_pair, with_slip
from scratchlm.data.corpus.stories import Story

ANNOTATION = re.compile(r"<<([0-9+\-*/]+)=(-?\d+)>>")
SOLUTION = ("There are 10 * 22 = <<10*22=220>>220 seats.\n"
            "So 220 - 133 = <<220-133=87>>87 seats are empty.\n"
            "#### 87")


def wrong_steps(solution: str) -> list[str]:
    """The annotations whose value is not their expression's (the expressions hold digits and + - * / only)."""
    return [expr for expr, value in ANNOTATION.findall(solution) if eval(expr) != int(value)]  # noqa: S307


def last_value(solution: str) -> int:
    return int(ANNOTATION.findall(solution)[-1][1])


def final(solution: str) -> int:
    return int(solution.rsplit("#### ", 1)[1])


@pytest.fixture(scope="module")
def pairs() -> list[dict]:
    return list(corpus.preference_pairs("train", 600, seed=3))


def test_pairs_are_a_pure_function_of_their_arguments_and_nest(pairs) -> None:
    assert list(corpus.preference_pairs("train", 50, seed=3)) == pairs[:50]
    assert list(corpus.preference_pairs("train", 50, seed=4)) != pairs[:50]
    assert {p["kind"] for p in pairs} == set(KINDS)
    assert all(p["chosen"] != p["rejected"] and p["prompt"][-1]["role"] == "user" for p in pairs)


def test_a_slip_is_carried_through_the_later_steps() -> None:
    slipped = with_slip(SOLUTION, step=0, slip=-10)
    assert slipped == ("There are 10 * 22 = <<10*22=210>>210 seats.\n"
                       "So 210 - 133 = <<210-133=77>>77 seats are empty.\n"
                       "#### 77")
    assert with_slip(SOLUTION, step=1, slip=1).endswith("<<220-133=88>>88 seats are empty.\n#### 88")
    assert with_slip("Each gets 7 / 7 = <<7/7=1>>1.\nSo 7 / 1 = <<7/1=7>>7.\n#### 7", 0, 1) is None  # 7 / 2
    assert with_slip("She keeps 3 - 2 = <<3-2=1>>1.\nSo 6 / 1 = <<6/1=6>>6.\n#### 6", 0, -1) is None  # 6 / 0


def test_math_pairs_are_right_against_wrong_in_one_place(pairs) -> None:
    for pair in (p for p in pairs if p["kind"].startswith("math")):
        chosen, rejected = pair["chosen"], pair["rejected"]
        assert wrong_steps(chosen) == [] and final(chosen) == last_value(chosen)
        if pair["kind"] == "math_slip":  # one step's arithmetic is off; everything after follows from it
            assert len(wrong_steps(rejected)) == 1
            assert final(rejected) == last_value(rejected) != final(chosen)
        else:  # every step is right, the final line is not
            assert wrong_steps(rejected) == [] and final(rejected) != last_value(rejected)


def test_a_ramble_is_the_reply_going_on_past_its_end(pairs) -> None:
    rambles = [p for p in pairs if p["kind"] == "ramble"]
    assert rambles and all(p["rejected"].startswith(p["chosen"]) for p in rambles)
    assert all(len(p["rejected"]) > len(p["chosen"]) + 10 for p in rambles)


STORY = Story("Once upon a time, in a quiet little village, there lived a shy fox named Mia. Mia loved the river. "
              "One day she lost her red ball.", "Mia", "a shy fox", "in a quiet little village",
              "she lost her red ball", "Tom")
DONOR = Story("A curious bunny called Lily lived on a sunny farm. Lily liked to sing. A curious bunny like her "
              "was afraid of the dark, but Ben helped her.", "Lily", "a curious bunny", "on a sunny farm",
              "she was afraid of the dark", "Ben")
REQUEST = "Write a story about Mia, a shy fox who lives in a quiet little village, and the day she lost her red ball."


def test_a_story_pair_drops_exactly_what_its_kind_says() -> None:
    character = _story_pair("story_character", REQUEST, STORY, DONOR)["rejected"]
    assert "Mia" not in character and character == STORY.text.replace("Mia", "Lily")
    place = _story_pair("story_place", REQUEST, STORY, DONOR)["rejected"]
    assert place == STORY.text.replace("in a quiet little village", "on a sunny farm")
    event = _story_pair("story_event", REQUEST, STORY, DONOR)["rejected"]
    assert event == ("A shy fox called Mia lived in a quiet little village. Mia liked to sing. A shy fox like her "
                     "was afraid of the dark, but Ben helped her.")
    he = DONOR._replace(event="he was afraid of the dark")  # pronouns would give the swap away
    assert _story_pair("story_character", REQUEST, STORY, he) is None
    assert _story_pair("story_event", REQUEST, STORY, he) is None
    assert _story_pair("story_place", REQUEST, STORY, DONOR._replace(place=STORY.place)) is None
