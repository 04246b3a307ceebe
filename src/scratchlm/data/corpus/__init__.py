"""The embedded default corpus: seeded generators of children's stories, grade-school math problems and
conversations about them.

The trainer has to work with no network and no downloads, so the package carries its own text:

* short children's stories (``stories.py``, from the plots in ``plots.py``), which teach a small model
  fluent, simple English;
* math word problems (``word_problems.py``) whose answers follow GSM8K's format exactly, so that a model
  trained here can be evaluated and fine-tuned with GSM8K tooling unchanged;
* conversations (``dialogue.py``) for supervised fine-tuning: math questions answered step by step,
  stories written to a request, and follow-up questions about an earlier turn;
* preference pairs (``preferences.py``) for reward models and DPO: a reply that is right by the rules of
  this world against one that is not (an arithmetic slip, a story that drops what was asked, a ramble).

Everything is a pure function of ``(split, n, seed)`` (``splits.py``). Items are produced one at a time
from an endless stream, so the first ``k`` items of a corpus of size ``n`` are the same for every
``n >= k`` and corpora of different sizes nest. Splits are disjoint by construction: an item belongs to
the split chosen by a hash of its text (of the question, for a math problem), and a conversation is
built only from items of its own split.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from itertools import islice

from scratchlm.data.corpus.dialogue import Conversation, StoryRequest, conversation_stream, story_request_stream
from scratchlm.data.corpus.preferences import Pair, pair_stream
from scratchlm.data.corpus.splits import SPLITS, check_count, check_split, seeded_rng, split_of
from scratchlm.data.corpus.stories import Story, story_stream
from scratchlm.data.corpus.word_problems import FAMILIES, problem_stream

__all__ = [
    "KINDS", "SPLITS", "Conversation", "Pair", "Story", "StoryRequest", "conversations", "documents", "format_math",
    "math_problems", "preference_pairs", "stories", "story_requests", "write_jsonl",
]

KINDS: tuple[str, ...] = ("documents", "stories", "math", "conversations", "preferences")

# The names under which the corpus tests look inside the generators: the split of a text's hash, the
# math stream tagged with each problem's family, and the family table.
_split_of = split_of
_tagged_math_stream = problem_stream
_MATH_FAMILIES = FAMILIES


def stories(split: str, n: int, seed: int = 0) -> Iterator[str]:
    """The first ``n`` stories of ``split`` for ``seed``."""
    # A plain function returning an iterator, so bad arguments fail at the call, not at the first next().
    check_split(split)
    check_count(n)
    return (story.text for story in islice(story_stream(split, seed), n))


def math_problems(split: str, n: int, seed: int = 0) -> Iterator[dict[str, str]]:
    """The first ``n`` math problems of ``split`` for ``seed``, as ``{"question": ..., "answer": ...}``."""
    check_split(split)
    check_count(n)
    return (problem for _, problem in islice(problem_stream(split, seed), n))


def format_math(problem: dict[str, str]) -> str:
    """The pretraining text of a math problem."""
    return f"Question: {problem['question']}\nAnswer: {problem['answer']}"


def documents(split: str, n: int, seed: int = 0, math_fraction: float = 0.5) -> Iterator[str]:
    """n pretraining documents of the split, stories and formatted math problems interleaved
    deterministically.

    Each position independently holds a math problem with probability ``math_fraction``, decided by a
    stream of its own, so the mix of a prefix does not depend on ``n``.
    """
    check_split(split)
    check_count(n)
    if not 0.0 <= math_fraction <= 1.0:
        raise ValueError(f"math_fraction must be in [0, 1], got {math_fraction}")
    return islice(_document_stream(split, seed, math_fraction), n)


def _document_stream(split: str, seed: int, math_fraction: float) -> Iterator[str]:
    mix = seeded_rng("mix", split, seed)
    story_texts = (story.text for story in story_stream(split, seed))
    problems = problem_stream(split, seed)
    while True:
        if mix.random() < math_fraction:
            yield format_math(next(problems)[1])
        else:
            yield next(story_texts)


def conversations(split: str, n: int, seed: int = 0) -> Iterator[Conversation]:
    """The first ``n`` conversations of ``split`` for ``seed``: lists of ``{"role", "content"}`` messages.

    They are built from the math problems and stories of the same split and seed, in their order, so
    the held-out conversations ask exactly the questions of ``math_problems("heldout", ...)`` and no
    train or validation conversation holds a held-out question or story.
    """
    check_split(split)
    check_count(n)
    return islice(conversation_stream(split, seed), n)


def story_requests(split: str, n: int, seed: int = 0) -> Iterator[StoryRequest]:
    """``n`` requests for a story, each naming a character, a place and an event, with the story of the
    corpus that answers it: what a check of "did the reply keep the requested character" needs."""
    check_split(split)
    check_count(n)
    return islice(story_request_stream(split, seed), n)


def preference_pairs(split: str, n: int, seed: int = 0) -> Iterator[Pair]:
    """The first ``n`` preference pairs of ``split`` for ``seed``: ``{"prompt": [messages], "chosen": str,
    "rejected": str, "kind": str}``, made from the split's own problems, stories and conversations."""
    check_split(split)
    check_count(n)
    return islice(pair_stream(split, seed), n)


def write_jsonl(path: str | os.PathLike, split: str, n: int, seed: int = 0, kind: str = "documents") -> int:
    """Writes one JSON object per line: {"text": ...} for kind documents/stories, {"question","answer"}
    for kind math, {"messages": [...]} for kind conversations, {"prompt", "chosen", "rejected", "kind"} for
    kind preferences.

    Returns the number of lines written.
    """
    records: Iterator[dict]
    if kind == "documents":
        records = ({"text": text} for text in documents(split, n, seed))
    elif kind == "stories":
        records = ({"text": text} for text in stories(split, n, seed))
    elif kind == "math":
        records = math_problems(split, n, seed)
    elif kind == "conversations":
        records = ({"messages": messages} for messages in conversations(split, n, seed))
    elif kind == "preferences":
        records = preference_pairs(split, n, seed)
    else:
        raise ValueError(f"unknown kind {kind!r}; valid kinds are {', '.join(KINDS)}")
    count = 0
    # Arguments were validated above, before the file is opened, so a bad call leaves no empty file behind.
    with open(path, "w", encoding="utf-8", newline="\n") as f:
        for record in records:
            f.write(json.dumps(record, ensure_ascii=False))
            f.write("\n")
            count += 1
    return count
