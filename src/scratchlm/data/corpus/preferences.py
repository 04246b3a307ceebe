"""Preference pairs: a prompt and two replies, where the better one is known by construction.

Each pair is built from the corpus's own items, so the better reply is right by the rules of its world:

* ``math_slip``: a worked solution against the same solution with an arithmetic slip in one step, carried
  through the later steps as a student would carry it, so the final answer is wrong too;
* ``math_final``: a worked solution against the same steps under a final ``#### <number>`` line that
  disagrees with the last step;
* ``story_character`` / ``story_place`` / ``story_event``: the story a request asks for against one that
  drops the requested character (another name), the place (another home) or the event (another plot,
  told about the requested hero in the requested place);
* ``ramble``: a reply from a conversation of the corpus that ends its turn, against the same reply going
  on past its end (repeating itself, filling with pleasantries, or starting on something nobody asked).

A pair is ``{"prompt": [messages], "chosen": str, "rejected": str, "kind": str}``, the record format that
``scratchlm.data.preference_data`` reads. The pairs of a split are made only from that split's problems,
stories and conversations, whose splits come from the hash of their text, so no held-out question or story
appears in a training pair.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from fractions import Fraction

from scratchlm.data.corpus.dialogue import conversation_stream, story_request_stream
from scratchlm.data.corpus.splits import seeded_rng
from scratchlm.data.corpus.stories import Story, story_stream
from scratchlm.data.corpus.word_problems import problem_stream
from scratchlm.data.corpus.world import capitalized

Pair = dict  # {"prompt": [{"role", "content"}, ...], "chosen": str, "rejected": str, "kind": str}

KINDS: tuple[str, ...] = ("math_slip", "math_final", "story_character", "story_place", "story_event", "ramble")

# A step's calculator annotation, as the word problems write it: <<expression=value>>value.
_ANNOTATION = re.compile(r"<<([0-9+\-*/]+)=(-?\d+)>>(-?\d+)")
_OPERAND = re.compile(r"\d+")
_SLIPS: tuple[int, ...] = (-10, -2, -1, 1, 2, 10)
_PLEASANTRIES: tuple[str, ...] = (
    "I hope this helps!", "Let me know if you have any other questions.", "Have a wonderful day!",
    "That is all for now.", "Thank you for asking!",
)


def pair_stream(split: str, seed: int) -> Iterator[Pair]:
    """An endless stream of pairs of the split: a third math, a third stories, a third rambles."""
    rng = seeded_rng("preferences", split, seed)
    problems = (problem for _, problem in problem_stream(split, seed))
    requests = story_request_stream(split, seed)
    donors = story_stream(split, seed + 1)  # other stories of the split, for what a wrong story has instead
    conversations = conversation_stream(split, seed)
    while True:
        roll = rng.random()
        if roll < 1 / 3:
            yield _math_pair(rng, next(problems))
        elif roll < 2 / 3:
            request = next(requests)
            kind = rng.choice(("story_character", "story_place", "story_event"))
            pair = None
            while pair is None:  # a donor with nothing fit to give is passed over for the next
                pair = _story_pair(kind, request.request, request.story, next(donors))
            yield pair
        else:
            yield _ramble_pair(rng, next(conversations), next(donors))


# ------------------------------------------------------------------------------------------------ math


def _spaced(expression: str) -> str:
    """The expression as a step's text writes it before its annotation: "3 * 4"."""
    return re.sub(r"([+\-*/])", r" \1 ", expression)


def _value(expression: str) -> Fraction:
    """The value of an annotation's expression (digits and + - * / only, left to right by precedence)."""
    terms = re.split(r"(?=[+-])", expression)
    total = Fraction(0)
    for term in filter(None, terms):
        sign = -1 if term[0] == "-" else 1
        factors = re.split(r"([*/])", term.lstrip("+-"))
        value = Fraction(int(factors[0]))
        for op, operand in zip(factors[1::2], factors[2::2], strict=True):
            value = value * int(operand) if op == "*" else value / int(operand)
        total += sign * value
    return total


def with_slip(solution: str, step: int, slip: int) -> str | None:
    """The solution with step `step`'s result off by `slip`, and every later step that uses a changed result
    recomputed from it; None when a recomputed step would leave the whole numbers (or go below zero, or divide
    by a result slipped to zero)."""
    lines = solution.split("\n")
    changed: dict[str, str] = {}  # a result as the right solution has it -> as the slipped one has it
    for i, line in enumerate(lines[:-1]):
        match = _ANNOTATION.search(line)
        if match is None or i < step:
            continue
        expression, value = match.group(1), int(match.group(2))
        new_expression = _OPERAND.sub(lambda m: changed.get(m.group(0), m.group(0)), expression)
        try:
            new_value = _value(new_expression) + (slip if i == step else 0)
        except ZeroDivisionError:
            return None
        if new_value.denominator != 1 or new_value < 0:
            return None
        if new_expression == expression and new_value == value:
            continue
        changed[str(value)] = str(new_value)
        line = line.replace(f"{_spaced(expression)} = ", f"{_spaced(new_expression)} = ", 1)
        lines[i] = line.replace(match.group(0), f"<<{new_expression}={new_value}>>{new_value}", 1)
    final = lines[-1].removeprefix("#### ")
    lines[-1] = f"#### {changed.get(final, final)}"
    return "\n".join(lines)


def _math_pair(rng: random.Random, problem: dict[str, str]) -> Pair:
    solution = problem["answer"]
    body, final = solution.rsplit("#### ", 1)
    steps = len(solution.split("\n")) - 1
    rejected = None
    if rng.random() < 0.5:
        kind = "math_slip"
        tries = [(step, slip) for step in range(steps) for slip in _SLIPS]
        rng.shuffle(tries)
        # A slip whose result no later step uses would leave the answer right: only those that reach it count.
        rejected = next((r for step, slip in tries if (r := with_slip(solution, step, slip)) is not None
                         and not r.endswith(f"#### {final}")), None)
    if rejected is None:  # no slip of this problem reaches the answer in whole numbers: the final line is wrong
        kind = "math_final"
        rejected = f"{body}#### {int(final) + rng.choice([s for s in _SLIPS if int(final) + s >= 0])}"
    return _pair(problem["question"], solution, rejected, kind)


# --------------------------------------------------------------------------------------------- stories


def _replace_name(text: str, old: str, new: str) -> str:
    return re.sub(rf"\b{re.escape(old)}\b", new, text)


def _replace_phrase(text: str, old: str, new: str) -> str:
    """Replace a phrase written in lower case or at the start of a sentence."""
    return text.replace(old, new).replace(capitalized(old), capitalized(new))


def _is_she(story: Story) -> bool:
    """Whether the hero is a she: every plot's event names the hero by pronoun ("she got lost far from home")."""
    return re.search(r"\b(he|she|his|him|her)\b", story.event).group(1) in ("she", "her")


def _story_pair(kind: str, request: str, story: Story, donor: Story) -> Pair | None:
    """The requested story against one that drops one of what the request names; the donor, another story
    of the split, gives the name, home or plot put in its place. None: the donor has nothing fit to give
    (the same home, the same event, a hero of the other sex, whose pronouns would give the change away)."""
    if kind == "story_character":
        if _is_she(donor) != _is_she(story) or donor.name in (story.name, story.friend) or \
                re.search(rf"\b{re.escape(donor.name)}\b", story.text):
            return None
        rejected = _replace_name(story.text, story.name, donor.name)
    elif kind == "story_place":
        if donor.place == story.place:
            return None
        rejected = _replace_phrase(story.text, story.place, donor.place)
    else:  # the donor's plot, told about the requested hero, who is introduced and lives as requested
        if _is_she(donor) != _is_she(story) or donor.event == story.event or donor.friend == story.name:
            return None
        rejected = _replace_name(donor.text, donor.name, story.name)
        rejected = _replace_phrase(_replace_phrase(rejected, donor.place, story.place), donor.character,
                                   story.character)
    return _pair(request, story.text, rejected, kind)


# ------------------------------------------------------------------------------------------------ rambles


def _ramble(rng: random.Random, reply: str, donor: Story) -> str:
    """What a reply that does not know when to stop adds after its end."""
    how = rng.randrange(3)
    if how == 0:  # says its last sentence again, and again
        last = re.split(r"(?<=[.!?]) ", reply.split("\n")[-1])[-1]
        return "\n".join([reply] + [last] * rng.randint(2, 3))
    if how == 1:
        return reply + "\n\n" + " ".join(rng.choices(_PLEASANTRIES, k=rng.randint(3, 5)))
    return reply + "\n\n" + donor.text.split("\n\n")[0]  # starts on another story nobody asked for


def _ramble_pair(rng: random.Random, conversation: list[dict[str, str]], donor: Story) -> Pair:
    """A conversation cut before one of its replies: that reply against the same reply rambling on."""
    replies = [i for i, message in enumerate(conversation) if message["role"] == "assistant"]
    at = rng.choice(replies)
    reply = conversation[at]["content"]
    return {"prompt": conversation[:at], "chosen": reply, "rejected": _ramble(rng, reply, donor), "kind": "ramble"}


def _pair(question: str, chosen: str, rejected: str, kind: str) -> Pair:
    return {"prompt": [{"role": "user", "content": question}], "chosen": chosen, "rejected": rejected, "kind": kind}
