"""Conversations for supervised fine-tuning, made from the corpus's own math problems and stories.

A conversation holds one or two tasks, each a user turn and the assistant's answer:

* a math word problem, answered with the corpus's GSM8K-style solution (sometimes after a short
  lead-in), so the reply always ends with its ``#### <number>`` line;
* a request for a story that names the character, the place and the event, answered with the corpus
  story those facts were taken from.

Sometimes a system prompt comes first, and follow-up questions ask about an earlier turn ("What was the
final answer again?", "Where did Mia live?"), answered from the facts of that turn. The problems and
stories come from the streams of the conversation's own split, in order, so a conversation can never
carry an item of another split.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from typing import NamedTuple

from scratchlm.data.corpus.splits import seeded_rng
from scratchlm.data.corpus.stories import Story, story_stream
from scratchlm.data.corpus.word_problems import problem_stream
from scratchlm.data.corpus.world import capitalized

Message = dict[str, str]  # {"role": "system" | "user" | "assistant", "content": ...}
Conversation = list[Message]
FollowUp = tuple[str, str]  # a question about an earlier turn and its answer

_GENERAL_SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a helpful assistant.",
    "You are a friendly and patient assistant.",
    "You are a helpful assistant. Answer clearly and kindly.",
)
_MATH_SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a math tutor. Solve each problem one step at a time and give the final answer on its own "
    "line as #### <number>.",
    "You help children with math word problems. Show every step.",
)
_STORY_SYSTEM_PROMPTS: tuple[str, ...] = (
    "You are a storyteller who writes short, gentle stories for young children.",
    "You write happy bedtime stories for kids.",
)

# Half of the math questions are asked bare, the way an evaluation asks them; the rest in these words.
_MATH_ASKS: tuple[str, ...] = (
    "Solve this problem: {question}",
    "{question} Show your work.",
    "Can you help me with this math problem? {question}",
    "Here is a word problem.\n\n{question}",
    "Please work this out step by step: {question}",
    "{question} Explain each step.",
)
_MATH_LEAD_INS: tuple[str, ...] = (
    "Let's solve it step by step.",
    "Here is how to work it out.",
    "Sure! Let's go one step at a time.",
)
_STORY_ASKS: tuple[str, ...] = (
    "Write a story about {name}, {character} who lives {place}, and the day {event}.",
    "Tell me a story about {character} named {name} who lives {place}. In the story, {event}.",
    "Can you write a short story for children? The hero is {name}, {character} living {place}, and one "
    "day {event}.",
    "I would like a bedtime story about {name}, who lives {place}, and the day {event}.",
    "Please write a children's story: {name} is {character} who lives {place}, and {event}.",
)
# How a follow-up points back at a task when another task came after it.
_BACK_TO_MATH: tuple[str, ...] = ("Going back to the math problem: ", "About the first problem: ")
_BACK_TO_STORY: tuple[str, ...] = ("Going back to the story: ", "About the story you wrote: ")


class StoryRequest(NamedTuple):
    """A request for a story and the corpus story that answers it."""

    request: str
    name: str  # the character the request names: a fitting reply must contain this name
    story: Story


class _Task(NamedTuple):
    """One exchange of a conversation and what can be asked about it afterwards."""

    ask: str
    reply: str
    follow_ups: list[FollowUp]
    back_references: tuple[str, ...]


def _story_request(rng: random.Random, story: Story) -> str:
    """A request that names the story's character, place and event."""
    return rng.choice(_STORY_ASKS).format(name=story.name, character=story.character, place=story.place,
                                          event=story.event)


def story_request_stream(split: str, seed: int) -> Iterator[StoryRequest]:
    rng = seeded_rng("story_requests", split, seed)
    for story in story_stream(split, seed):
        yield StoryRequest(_story_request(rng, story), story.name, story)


def conversation_stream(split: str, seed: int) -> Iterator[Conversation]:
    rng = seeded_rng("conversations", split, seed)
    problems = (problem for _, problem in problem_stream(split, seed))
    stories = story_stream(split, seed)

    def task(kind: str) -> _Task:
        return _math_task(rng, next(problems)) if kind == "math" else _story_task(rng, next(stories))

    while True:
        yield _conversation(rng, task)


def _conversation(rng: random.Random, task: Callable[[str], _Task]) -> Conversation:
    roll = rng.random()
    if roll < 0.45:
        kinds = ["math"]
    elif roll < 0.8:
        kinds = ["story"]
    else:
        kinds = rng.choice((["math", "story"], ["story", "math"], ["math", "math"]))
    messages: Conversation = []
    if rng.random() < 0.3:
        themed = _MATH_SYSTEM_PROMPTS if kinds[0] == "math" else _STORY_SYSTEM_PROMPTS
        messages.append({"role": "system", "content": rng.choice(_GENERAL_SYSTEM_PROMPTS + themed)})
    tasks = [task(kind) for kind in kinds]
    for each in tasks:
        messages += _exchange(each.ask, each.reply)
    if len(tasks) == 2:
        # The point of a second task: a question about the first one has to look past it.
        question, answer = rng.choice(tasks[0].follow_ups)
        reference = rng.choice(tasks[0].back_references)
        messages += _exchange(reference + question[0].lower() + question[1:], answer)
    asked = rng.choices((0, 1, 2), weights=(0.5, 0.35, 0.15))[0]
    for question, answer in rng.sample(tasks[-1].follow_ups, asked):
        messages += _exchange(question, answer)
    return messages


def _exchange(question: str, answer: str) -> Conversation:
    return [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]


def _math_task(rng: random.Random, problem: dict[str, str]) -> _Task:
    question, solution = problem["question"], problem["answer"]
    ask = question if rng.random() < 0.5 else rng.choice(_MATH_ASKS).format(question=question)
    reply = f"{rng.choice(_MATH_LEAD_INS)}\n{solution}" if rng.random() < 0.2 else solution
    steps = solution.split("\n")[:-1]
    final = solution.rsplit("#### ", 1)[1]
    follow_ups = [
        ("What was the final answer again?", f"The final answer was {final}."),
        ("Can you just tell me the answer?", f"The answer is {final}."),
        ("How many steps did that take?", f"It took {len(steps)} steps."),
        ("What was the first step?", f"The first step was: {steps[0]}"),
    ]
    return _Task(ask, reply, follow_ups, _BACK_TO_MATH)


def _story_task(rng: random.Random, story: Story) -> _Task:
    follow_ups = [
        ("Who was the story about?", f"The story was about {story.name}, {story.character}."),
        (f"Where did {story.name} live?", f"{story.name} lived {story.place}."),
        (f"What happened to {story.name}?", f"{capitalized(story.event)}."),
        (f"What was the name of {story.name}'s friend?", f"{story.name}'s friend was called {story.friend}."),
    ]
    return _Task(_story_request(rng, story), story.text, follow_ups, _BACK_TO_STORY)
