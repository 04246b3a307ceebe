"""The embedded default corpus: seeded generators of children's stories and grade-school math problems.

The trainer has to work with no network and no downloads, so the package carries its own text. Two
kinds are generated:

* short children's stories (a beginning, a problem and a resolution over several paragraphs), which
  teach a small model fluent, simple English;
* math word problems whose answers follow GSM8K's format exactly (one step per line with calculator
  annotations ``<<expression=result>>`` and a final ``#### <number>`` line), so that a model trained
  here can be evaluated and fine-tuned with GSM8K tooling unchanged.

Everything is a pure function of ``(split, n, seed)``: each stream draws from its own
``random.Random`` seeded through SHA-256, never from global state or Python's salted ``hash()``. Items
are produced one at a time from an endless stream, so the first ``k`` items of a corpus of size ``n``
are the same for every ``n >= k`` and corpora of different sizes nest.

Splits are disjoint by construction: an item belongs to the split chosen by a SHA-256 bucket of its
text (of the question, for a math problem), and each split's stream drops items that hash to another
split. Identical texts therefore always land in the same split, so no story or question can appear in
two splits. Streams also drop repeats within their own split.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
import random
import re
from collections.abc import Callable, Iterator
from itertools import islice
from typing import NamedTuple

SPLITS: tuple[str, ...] = ("train", "validation", "heldout")
KINDS: tuple[str, ...] = ("documents", "stories", "math")

# Out of 100 hash buckets: train takes 90, validation and heldout 5 each.
_BUCKET_LIMITS: tuple[tuple[int, str], ...] = ((90, "train"), (95, "validation"), (100, "heldout"))

# --------------------------------------------------------------------------------------------------
# Seeding, splitting and the public API
# --------------------------------------------------------------------------------------------------


def _check_split(split: str) -> None:
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; valid splits are {', '.join(SPLITS)}")


def _check_count(n: int) -> None:
    if n < 0:
        raise ValueError(f"n must be non-negative, got {n}")


def _rng(stream: str, split: str, seed: int) -> random.Random:
    """An RNG whose state depends only on its arguments, identical across runs, machines and versions."""
    digest = hashlib.sha256(f"scratchlm.corpus|{stream}|{split}|{seed}".encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def _split_of(digest: bytes) -> str:
    bucket = int.from_bytes(digest[:8], "big") % 100
    return next(name for limit, name in _BUCKET_LIMITS if bucket < limit)


def _story_stream(split: str, seed: int) -> Iterator[str]:
    rng = _rng("stories", split, seed)
    seen: set[bytes] = set()
    while True:
        text = _story(rng)
        digest = hashlib.sha256(text.encode()).digest()
        if _split_of(digest) == split and digest not in seen:
            seen.add(digest)
            yield text


def _tagged_math_stream(split: str, seed: int) -> Iterator[tuple[str, dict[str, str]]]:
    """Yields (family name, problem); the family is kept apart so the public records stay GSM8K-shaped."""
    rng = _rng("math", split, seed)
    seen: set[bytes] = set()
    while True:
        family, problem = _math_problem(rng)
        digest = hashlib.sha256(problem["question"].encode()).digest()
        if _split_of(digest) == split and digest not in seen:
            seen.add(digest)
            yield family, problem


def stories(split: str, n: int, seed: int = 0) -> Iterator[str]:
    """The first ``n`` stories of ``split`` for ``seed``."""
    # A plain function returning an iterator, so bad arguments fail at the call, not at the first next().
    _check_split(split)
    _check_count(n)
    return islice(_story_stream(split, seed), n)


def math_problems(split: str, n: int, seed: int = 0) -> Iterator[dict[str, str]]:
    """The first ``n`` math problems of ``split`` for ``seed``, as ``{"question": ..., "answer": ...}``."""
    _check_split(split)
    _check_count(n)
    return (problem for _, problem in islice(_tagged_math_stream(split, seed), n))


def format_math(problem: dict[str, str]) -> str:
    """The pretraining text of a math problem."""
    return f"Question: {problem['question']}\nAnswer: {problem['answer']}"


def documents(split: str, n: int, seed: int = 0, math_fraction: float = 0.5) -> Iterator[str]:
    """n pretraining documents of the split, stories and formatted math problems interleaved
    deterministically.

    Each position independently holds a math problem with probability ``math_fraction``, decided by a
    stream of its own, so the mix of a prefix does not depend on ``n``.
    """
    _check_split(split)
    _check_count(n)
    if not 0.0 <= math_fraction <= 1.0:
        raise ValueError(f"math_fraction must be in [0, 1], got {math_fraction}")
    return islice(_document_stream(split, seed, math_fraction), n)


def _document_stream(split: str, seed: int, math_fraction: float) -> Iterator[str]:
    mix = _rng("mix", split, seed)
    story_stream = _story_stream(split, seed)
    math_stream = _tagged_math_stream(split, seed)
    while True:
        if mix.random() < math_fraction:
            yield format_math(next(math_stream)[1])
        else:
            yield next(story_stream)


def write_jsonl(path: str | os.PathLike, split: str, n: int, seed: int = 0, kind: str = "documents") -> int:
    """Writes one JSON object per line: {"text": ...} for kind documents/stories, {"question","answer"}
    for kind math.

    Returns the number of lines written.
    """
    records: Iterator[dict[str, str]]
    if kind == "documents":
        records = ({"text": text} for text in documents(split, n, seed))
    elif kind == "stories":
        records = ({"text": text} for text in stories(split, n, seed))
    elif kind == "math":
        records = math_problems(split, n, seed)
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


# --------------------------------------------------------------------------------------------------
# Shared vocabulary
# --------------------------------------------------------------------------------------------------

_GIRL_NAMES: tuple[str, ...] = (
    "Lily", "Mia", "Emma", "Ava", "Sophie", "Lucy", "Zoe", "Ella", "Chloe", "Grace", "Ruby", "Nora",
    "Hannah", "Anna", "Sara", "Maya", "Leah", "Clara", "Rosa", "Amara", "Priya", "Aisha", "Mei", "Yuki",
    "Fatima", "Elena", "Isla", "Ivy", "Hazel", "Luna", "Daisy", "Poppy", "Molly", "Alice", "Julia",
    "Nina", "Tara", "Kira", "Lena", "Sofia", "Olivia", "Amelia", "Harper", "Stella", "Violet", "Willow",
    "Iris", "Jade", "Esme", "Freya", "Layla", "Zara", "Nadia", "Carmen", "Gemma", "Penny", "Bella",
    "Rita", "Tess", "Wendy", "Abby", "Kate", "Megan", "Paula", "Ingrid", "Naomi", "Keiko", "Lucia",
)
_BOY_NAMES: tuple[str, ...] = (
    "Tom", "Max", "Leo", "Sam", "Ben", "Jack", "Finn", "Noah", "Liam", "Oscar", "Theo", "Eli", "Milo",
    "Hugo", "Owen", "Luke", "Adam", "Omar", "Ravi", "Kenji", "Mateo", "Diego", "Ivan", "Felix", "Jonah",
    "Toby", "Oliver", "Henry", "Jasper", "Arlo", "Ezra", "Kai", "Rory", "Alfie", "Charlie", "Danny",
    "Ethan", "George", "Harry", "Isaac", "Jamal", "Kofi", "Lucas", "Marco", "Nico", "Pablo", "Quinn",
    "Ryan", "Simon", "Tariq", "Umar", "Victor", "Wes", "Yusuf", "Zack", "Arjun", "Bruno", "Carl", "Dev",
    "Emil", "Frank", "Gus", "Hank", "Joel", "Kevin", "Louis", "Mark", "Nate", "Peter", "Raj", "Sean",
)

_SHE: dict[str, str] = {
    "he": "she", "He": "She", "him": "her", "his": "her", "His": "Her", "himself": "herself",
}
_HE: dict[str, str] = {"he": "he", "He": "He", "him": "him", "his": "his", "His": "His", "himself": "himself"}


def _person(rng: random.Random, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """A random name with matching pronouns, under the keys name, he, He, him, his, His, himself."""
    girl = rng.random() < 0.5
    names = _GIRL_NAMES if girl else _BOY_NAMES
    name = rng.choice(names)
    while name in exclude:
        name = rng.choice(names)
    return {"name": name, **(_SHE if girl else _HE)}


def _a(phrase: str) -> str:
    """The phrase with its indefinite article; the word lists avoid words like 'unicorn' that break this."""
    return ("an " if phrase[0] in "aeiouAEIOU" else "a ") + phrase


def _cap(text: str) -> str:
    return text[0].upper() + text[1:]


def _join(items: list[str]) -> str:
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"


# --------------------------------------------------------------------------------------------------
# Stories
# --------------------------------------------------------------------------------------------------

_ANIMALS: tuple[str, ...] = (
    "bunny", "fox", "bear cub", "kitten", "puppy", "duck", "owl", "mouse", "squirrel", "turtle", "frog",
    "hedgehog", "deer", "lamb", "pig", "goat", "chick", "penguin", "elephant", "lion cub", "tiger cub",
    "monkey", "giraffe", "zebra", "koala", "panda", "raccoon", "otter", "beaver", "badger", "robin",
    "sparrow", "goose", "seal", "dolphin", "crab", "ladybug", "bee", "snail", "dragon", "dinosaur",
    "robot", "pony", "hamster", "parrot", "wolf cub", "mole", "kangaroo",
)
_HERO_ADJECTIVES: tuple[str, ...] = (
    "little", "small", "tiny", "curious", "brave", "shy", "happy", "kind", "clever", "playful", "gentle",
    "cheerful", "sleepy", "busy", "silly", "friendly", "young", "fluffy", "careful", "quiet", "lively",
    "bright", "funny", "eager", "adventurous", "cheeky", "bouncy", "thoughtful", "cozy", "chatty",
)
_TRAITS: tuple[str, ...] = (
    "kind to everyone", "full of questions", "ready to help", "a little bit shy", "very curious",
    "full of energy", "good at sharing", "quick to laugh", "happy to try new things", "very polite",
)
# Homes, each with its preposition ("on a farm", "in a forest").
_PLACES: tuple[str, ...] = (
    "in a big green forest", "in a quiet little village", "on a sunny farm", "in a small town by the sea",
    "in a cozy house near the woods", "in a busy city", "in a peaceful valley", "in a tall tree by the river",
    "in a warm burrow under a hill", "in a colorful garden", "in a snowy mountain village",
    "in a little house by the lake", "in a wide green meadow", "in a noisy jungle", "on a small island",
    "in a pretty seaside town", "in an old farmhouse", "in a busy neighborhood", "on a quiet street",
    "in a happy little zoo", "in a big apple orchard", "in a blue house on a hill", "in a tiny nest",
    "in a yellow house at the end of the road", "in a cabin in the pine woods", "in a hollow log",
    "on a windy hilltop", "in a red barn full of hay", "above a bakery", "in a cottage with a round door",
    "at the edge of a dark pine forest", "near a sparkling waterfall", "on a boat on a wide river",
)
_OUTINGS: tuple[str, ...] = (
    "the park", "the beach", "the meadow", "the pond", "the playground", "the garden", "the hill",
    "the woods", "the field", "the river", "the orchard", "the schoolyard", "the big lawn", "the lake",
)
_FAMILIES_AT_HOME: tuple[str, ...] = (
    "mom and dad", "grandma", "grandpa", "big family", "two brothers", "little sister", "mom",
    "dad", "aunt and uncle", "grandparents", "big sister", "baby brother",
)
_ACTIVITIES: tuple[str, ...] = (
    "play in the garden", "read picture books", "sing songs", "build towers with blocks",
    "run in the tall grass", "look at the stars", "paint pictures", "splash in puddles",
    "collect pretty stones", "dance in the sunshine", "climb little hills", "help in the kitchen",
    "watch the clouds go by", "play hide and seek", "count the birds", "draw with chalk", "ride a bike",
    "make mud pies", "listen to stories", "pick flowers", "play with a ball", "hum little tunes",
    "look for bugs under rocks", "bake cookies", "make paper boats",
)
_TOYS: tuple[str, ...] = (
    "ball", "teddy bear", "toy boat", "hat", "scarf", "book", "drum", "wooden train", "doll", "shell",
    "toy car", "yo-yo", "marble", "bucket", "umbrella", "lantern", "music box", "whistle",
    "spinning top", "jump rope", "toy robot", "picture book", "stone", "necklace", "ribbon", "blanket",
    "backpack", "flute", "bell", "crayon box", "toy truck", "stuffed rabbit",
)
_FLYING_TOYS: tuple[str, ...] = ("kite", "ball", "balloon", "paper plane", "frisbee", "hat", "beach ball")
_COLORS: tuple[str, ...] = (
    "red", "blue", "yellow", "green", "purple", "orange", "pink", "shiny", "striped", "spotted", "golden",
    "silver", "bright", "little", "old", "brown", "white", "black",
)
_HELPERS: tuple[tuple[str, str], ...] = (
    ("Mom", "she"), ("Dad", "he"), ("Grandma", "she"), ("Grandpa", "he"), ("Aunt May", "she"),
    ("Uncle Joe", "he"), ("the old owl", "he"), ("the wise turtle", "she"), ("Mrs. Green", "she"),
    ("Mr. Lee", "he"), ("the kind farmer", "he"), ("the big brown bear", "she"), ("the teacher", "she"),
    ("the old goat", "he"),
)
_TIMES: tuple[str, ...] = (
    "one day", "one morning", "one afternoon", "early one morning", "one Saturday", "one summer day",
    "after lunch one day", "one fine day", "on a warm afternoon", "one spring morning", "one autumn day",
    "one bright morning", "on a lazy Sunday", "after school one day",
)
_BAD_FEELINGS: tuple[str, ...] = (
    "sad", "upset", "worried", "unhappy", "gloomy", "frustrated", "grumpy", "lonely", "miserable", "cross",
)
_GOOD_FEELINGS: tuple[str, ...] = (
    "happy", "glad", "proud", "cheerful", "joyful", "thankful", "delighted", "calm", "peaceful",
)
_SEARCH_SPOTS: tuple[str, ...] = (
    "under the bushes", "behind the shed", "in the tall grass", "near the pond", "inside the old wagon",
    "by the garden gate", "under the bench", "next to the swing", "behind the big rock",
    "under the kitchen table", "in the sandbox", "around the flower beds", "along the fence",
)
_FOUND_SPOTS: tuple[str, ...] = (
    "under a pile of leaves", "behind a flower pot", "inside a rain boot", "on a low branch",
    "under the sofa cushions", "next to the dog's bowl", "in the laundry basket", "under a big mushroom",
    "inside the mailbox", "in the middle of a bush",
)
_HIGH_SPOTS: tuple[str, ...] = (
    "at the top of a tall tree", "on the roof of the shed", "on a high branch of an old oak",
    "on top of the tall fence", "in a thorny bush", "on the roof of the barn", "in a tall pine tree",
)
_LANDMARKS: tuple[str, ...] = (
    "old windmill", "big red barn", "tall clock tower", "crooked oak tree", "blue bridge",
    "water tower", "tall pine tree", "white lighthouse", "yellow school bus stop",
)
_DOG_NAMES: tuple[str, ...] = ("Max", "Buddy", "Rex", "Bella", "Biscuit", "Pepper", "Rufus", "Daisy", "Scout")

_OPENINGS_WITH_PLACE: tuple[str, ...] = (
    "Once upon a time, {place}, there lived {hero_a} named {name}.",
    "There was once {hero_a} called {name} who lived {place}.",
    "{Place}, there lived {hero_a} named {name}.",
    "Long ago, {hero_a} named {name} lived {place}.",
    "Not far from here, {place}, lived {hero_a} named {name}.",
    "{name} was {hero_a} who lived {place}.",
    "Far away, {place}, there was {hero_a} whose name was {name}.",
    "{hero_A} named {name} lived {place}.",
    "A long time ago, {place}, lived {hero_a} called {name}.",
)
_OPENINGS_WITHOUT_PLACE: tuple[str, ...] = (
    "Once upon a time, there was {hero_a} named {name}.",
    "This is a story about {hero_a} named {name}.",
    "There once was {hero_a} named {name}.",
    "{name} was {hero_a} with a big heart.",
    "Everyone knew {name}, {hero_a} with a big smile.",
    "Once there was {hero_a} named {name} who loved to {activity}.",
    "Have you ever met {name}? {He} was {hero_a}, and {he} was {trait}.",
)
_HOMES: tuple[str, ...] = (
    "{He} lived {place} with {his} {family}.",
    "{His} home was {place}.",
    "{He} lived with {his} {family} {place}.",
)
_LIKES: tuple[str, ...] = (
    "{He} loved to {activity2}.",
    "More than anything, {name} liked to {activity2}.",
    "Every morning, {name} would {activity2} before breakfast.",
    "{His} favorite thing in the whole world was to {activity2}.",
    "When the sun was out, {he} liked to {activity2}.",
    "On rainy days, {name} liked to {activity2} instead.",
    "Nobody could {activity2} quite like {name}.",
)
_CHARACTER_SENTENCES: tuple[str, ...] = (
    "{He} was {trait2}, and everyone liked {him}.",
    "{name} had a laugh that made everyone smile.",
    "People said that {name} was {trait2}.",
    "{He} always said please and thank you.",
    "{name} was small, but {he} had a big imagination.",
    "{His} {family} said {he} was {trait2}.",
)
_FRIEND_INTROS: tuple[str, ...] = (
    "{His} best friend was {friend_a} named {fname}.",
    "{name} had a good friend, {friend_a} named {fname}.",
    "{name} and {his} friend {fname}, {friend_a}, did everything together.",
    "Next door lived {fname}, {friend_a} who was always ready to play.",
    "{name} often played with {fname}, {friend_a} from down the road.",
    "{His} friend {fname} was {friend_a} who knew lots of games.",
)
_LESSON_CLOSINGS: tuple[str, ...] = (
    "{name} learned that {lesson}.",
    "And from then on, {name} always remembered that {lesson}.",
    "That day, {name} found out that {lesson}.",
    '"Now I know that {lesson}," {name} said.',
)
_CLOSINGS: tuple[str, ...] = (
    "From that day on, {name} and {fname} were the best of friends.",
    "That night, {name} went to bed with a big smile on {his} face.",
    "It was a day {name} would never forget.",
    "{name} felt warm and {good2} inside.",
    "When the sun went down, {name} and {fname} waved goodbye and promised to play again tomorrow.",
    "Sometimes the best days start with a problem, {name} thought.",
    "And that is how {a_bad} morning turned into {a_good2} day.",
    "The end.",
)


class _Plot(NamedTuple):
    """One kind of story problem: the text pools for each part of the arc.

    ``setup`` adds the plot's own words to the story's variables. Help and resolution come in pairs so
    that the way a problem gets solved matches how help arrived.
    """

    setup: Callable[[random.Random, dict[str, str]], None]
    problems: tuple[str, ...]
    reactions: tuple[str, ...]
    solutions: tuple[tuple[str, str], ...]
    afters: tuple[str, ...]
    lessons: tuple[str, ...]


def _setup_lost(rng: random.Random, v: dict[str, str]) -> None:
    v["toy"] = rng.choice(_TOYS)
    v["color"] = rng.choice(_COLORS)
    v["obj"] = f"{v['color']} {v['toy']}"
    v["obj_a"] = _a(v["obj"])
    v["box"] = rng.choice(("toy box", "room", "bag", "basket", "cupboard", "drawer"))
    v["search1"], v["search2"] = rng.sample(_SEARCH_SPOTS, 2)
    v["found_spot"] = rng.choice(_FOUND_SPOTS)


_LOST = _Plot(
    _setup_lost,
    (
        ("{Time}, {name} wanted to play with {his} {obj}. But when {he} looked in {his} {box}, it was not "
         "there!"),
        ("{Time}, {name} took {his} {obj} to {outing}. {He} played for a long time. When it was time to go "
         "home, the {toy} was gone!"),
        ("{name} had {obj_a} that {he} loved very much. {Time}, {he} put it down for just a moment, and "
         "then {he} could not find it."),
        ("{Time}, {name} woke up and reached for {his} {obj}. It was not on {his} bed, and it was not in "
         "{his} {box}."),
    ),
    (
        '"Oh no! Where is my {toy}?" {name} cried. {He} felt very {bad}.',
        ('{name} looked high and low. "I can\'t find it anywhere," {he} said in a small voice.'),
        '{name} sat down and a tear rolled down {his} cheek. "My {toy} is lost," {he} whispered.',
        ("{He} searched and searched, but the {toy} was nowhere to be seen. {name} felt {bad} and a little "
         "bit {bad2}."),
    ),
    (
        (
            ('{fname} saw that {name} was {bad}. "What is wrong?" {fhe} asked. "I lost my {obj}," said '
             '{name}. "Don\'t worry," said {fname}. "I will help you look."'),
            ("They looked {search1} and {search2}. At last, {fname} spotted something {color} {found_spot}. "
             'It was the {toy}! "Here it is!" {fhe} shouted.'),
        ),
        (
            ('Just then, {fname} came by. "Why do you look so {bad}?" {fhe} asked. When {name} told '
             '{fhim} about the {toy}, {fname} said, "Two pairs of eyes are better than one. Let\'s look '
             'together!"'),
            ("First they checked {search1}. Then they checked {search2}. Finally, {name} saw the {toy} "
             "{found_spot}. {He} picked it up and held it tight."),
        ),
        (
            ('{Helper} heard {name} and came over. "Let\'s think," said {helper}. "Where did you play '
             'last?" {name} thought hard. "{Outing}!" {he} said. {fname} came along to help.'),
            ("The friends searched {search1}, {search2}, and everywhere in between. Then {fname} laughed "
             "and pointed. The {toy} was {found_spot} the whole time!"),
        ),
    ),
    (
        '{name} hugged {fname}. "Thank you for helping me," {he} said. {He} felt {good} again.',
        '{name} smiled from ear to ear. "You are the best friend ever," {he} told {fname}.',
        "Now {name} was {good}. {He} promised to take better care of {his} {toy}.",
    ),
    (
        "good friends always help each other",
        "it helps to stay calm and look carefully",
        "a problem gets smaller when you share it with a friend",
    ),
)


def _setup_stuck(rng: random.Random, v: dict[str, str]) -> None:
    v["toy"] = rng.choice(_FLYING_TOYS)
    v["obj"] = f"{rng.choice(_COLORS)} {v['toy']}"
    v["high"] = rng.choice(_HIGH_SPOTS)
    v["bird"] = rng.choice(("friendly crow", "little robin", "busy magpie", "curious sparrow", "kind pigeon"))


_STUCK = _Plot(
    _setup_stuck,
    (
        ("{Time}, {name} and {fname} went to {outing} with {name}'s {obj}. They played and laughed. Then a "
         "strong wind came, and whoosh! The {toy} flew up and got stuck {high}."),
        ("{Time}, {name} was playing with {his} {obj} at {outing}. {He} threw it up as high as {he} could. "
         "It went up, up, up, and landed {high}."),
        ("{name} loved {his} {obj}. {Time}, {he} was playing with it when it bounced away and got stuck "
         "{high}."),
    ),
    (
        ('{name} jumped and stretched, but {he} could not reach it. "It\'s too high!" {he} said. {He} felt '
         "{bad}."),
        ('"How will I ever get it down?" {name} asked. {He} tried to climb, but {he} slipped and landed on '
         "the soft grass."),
        '{name} looked up at the {toy}. It was so far away. "I want my {toy} back," {he} said sadly.',
    ),
    (
        (
            ('{fname} had an idea. "Let\'s ask {helper} for help," {fhe} said. They ran to find {helper} and '
             "told {hhim} what had happened."),
            ("{Helper} came with a tall ladder. {hHe} climbed up, step by step, and carefully took the {toy} "
             'down. "Here you go," {hhe} said with a smile.'),
        ),
        (
            '"I know what to do!" said {fname}. {fHe} found a long stick under a tree and brought it back.',
            ("{fname} held the stick up high and gave the {toy} a gentle poke. It wiggled, and then down "
             "it came, right into {name}'s arms!"),
        ),
        (
            "{name} and {fname} thought and thought. Then {name} saw an old wooden box and pushed it close.",
            ("{fname} held the box steady while {name} climbed on top. {He} stretched {his} arm as far as "
             "{he} could and grabbed the {toy}!"),
        ),
        (
            'Just then, a {bird} landed right next to the {toy}. "Can you help us?" asked {fname}.',
            ("The {bird} nodded. It gave the {toy} a push with its beak, and the {toy} tumbled down to the "
             'ground. "Thank you!" the friends shouted.'),
        ),
    ),
    (
        "{name} held the {toy} close. {He} was so {good} to have it back.",
        '"Let\'s play far away from the trees this time," said {name}, and {fname} laughed.',
        "{name} thanked everyone who had helped. Then they all played together until dinner time.",
    ),
    (
        "when you work together, even high places are not too high",
        "there is always a way if you keep thinking",
        "asking for help is a smart thing to do",
    ),
)

# Each fear brings its own scene and its own ways of being overcome; {placeholders} are filled later.
_FEARS: tuple[tuple[str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        ("Every night, when the lights went out, {name} felt scared. The room was so dark, and the shadows "
         "on the wall looked like monsters."),
        '"I don\'t like the dark," {he} whispered, and {he} pulled the blanket over {his} head.',
        (
            (
                ('{Helper} sat on the edge of the bed. "Let me show you something," {hhe} said, and {hhe} '
                 "opened the curtains."),
                ("Outside, the moon was big and round, and the sky was full of stars. \"The dark is just "
                 'the night saying good night," said {helper}. {name} looked at the stars and did not feel '
                 "scared anymore."),
            ),
            (
                ('The next day, {fname} gave {name} a small lamp shaped like a star. "This will keep you '
                 'company," {fhe} said.'),
                ("That night, the little star lamp glowed softly. {name} saw that the shadows were only "
                 "{his} toys and {his} chair. {He} smiled and fell asleep."),
            ),
        ),
    ),
    (
        ("One evening, big gray clouds filled the sky. Soon there was a loud BOOM of thunder, and {name} "
         "ran to hide under the table."),
        '"I am scared of the thunder!" {he} cried, covering {his} ears.',
        (
            (
                ('{fname} crawled under the table too. "Let\'s count together," {fhe} said. "After the '
                 'flash, we count until the boom. The bigger the number, the farther away the storm is."'),
                ("They counted, and each time the number got bigger. \"The storm is going away!\" said "
                 "{name}. Soon the rain stopped and the sun came out."),
            ),
            (
                ("{Helper} made warm cocoa and sat close to {name}. \"Thunder is only the noise the clouds "
                 'make when they bump into each other," {hhe} said.'),
                ("{name} sipped the cocoa and listened to the rain tapping on the window. It did not seem "
                 "so scary now. It sounded almost like music."),
            ),
        ),
    ),
    (
        ("{Time}, {name} went to the {water} with {fname}. Everyone was splashing and swimming, but {name} "
         "stayed on the shore."),
        '"The water is too deep," {he} said quietly. {He} felt {bad}.',
        (
            (
                '{fname} came and held {his} hand. "We can start where it is not deep," {fhe} said.',
                ("Step by step, they walked into the water. First it came up to {his} knees, then to {his} "
                 'tummy. {name} kicked and splashed and started to laugh. "This is fun!" {he} shouted.'),
            ),
            (
                '{Helper} gave {name} a bright {color} float. "Try it with this," {hhe} said.',
                ("{name} held the float and kicked {his} legs. {He} moved forward in the water! By the end "
                 "of the day, {he} was paddling all by {himself}."),
            ),
        ),
    ),
    (
        ("At {outing}, there was a very tall slide. All the other friends went down it, laughing, but "
         "{name} just looked at it from the bottom."),
        '"What if I fall?" {name} asked. {His} knees felt wobbly.',
        (
            (
                '"We can go down together," said {fname}. {fHe} climbed up the ladder right behind {name}.',
                ("At the top, {name} took a deep breath. Then, whoosh! Down they went, fast and smooth. "
                 '"Again! Again!" {name} shouted at the bottom.'),
            ),
            (
                '"Try the little slide first," said {helper}. "Then the middle one."',
                ("{name} went down the little slide, then the middle one. At last {he} climbed the tall "
                 "slide and zoomed down. {He} felt like a rocket!"),
            ),
        ),
    ),
    (
        ("{Time}, a big dog came running down the road, barking loudly. {name} stopped and hid behind "
         "{fname}."),
        '"That dog is so big," {name} said, shaking.',
        (
            (
                ('The owner of the dog smiled. "This is {dog}. {dog} is very friendly," she said. "{dog} '
                 'just wants to say hello."'),
                ("{name} held out {his} hand slowly. {dog} sniffed it and then licked it. It tickled! "
                 "{name} laughed and patted {dog} on the head."),
            ),
            (
                ('{fname} knelt down, and the dog wagged its tail. "See? It is just happy to see us," said '
                 "{fname}."),
                ("{name} took a small step closer. The dog sat down and rolled over for a belly rub. Soon "
                 "{name} and the dog were running and playing in the grass."),
            ),
        ),
    ),
)


def _setup_fear(rng: random.Random, v: dict[str, str]) -> None:
    v["water"] = rng.choice(("lake", "pool", "beach", "river", "pond"))
    v["color"] = rng.choice(_COLORS)
    v["dog"] = rng.choice(_DOG_NAMES)
    problem, reaction, solutions = rng.choice(_FEARS)
    help_text, resolution = rng.choice(solutions)
    # The fear's texts have placeholders of their own, so they are filled in a second pass by _story.
    v["fear_problem"], v["fear_reaction"] = problem, reaction
    v["fear_help"], v["fear_resolution"] = help_text, resolution


_FEAR = _Plot(
    _setup_fear,
    ("{fear_problem}",),
    ("{fear_reaction}",),
    (("{fear_help}", "{fear_resolution}"),),
    (
        "{name} felt brave and {good}. {He} could not wait to tell everyone.",
        '"I was scared, but now I am not," {name} said proudly.',
        "{fname} gave {name} a high five. \"You did it!\" {fhe} cheered.",
    ),
    (
        "being brave does not mean you are never scared",
        "things are often less scary when you look at them closely",
        "a friend can make a scary thing feel small",
    ),
)


def _setup_share(rng: random.Random, v: dict[str, str]) -> None:
    v["toy"] = rng.choice(_TOYS)
    v["obj_a"] = _a(f"{rng.choice(_COLORS)} {v['toy']}")
    v["count_to"] = rng.choice(("twenty", "fifty", "one hundred", "ten"))


_SHARE = _Plot(
    _setup_share,
    (
        "{Time}, {name} and {fname} found {obj_a} at {outing}. Both of them wanted to play with it first.",
        "{name} and {fname} were playing at {outing} when they both grabbed the same {toy}.",
        "{Time}, {helper} brought home {obj_a}. {name} and {fname} both reached for it at the same time.",
    ),
    (
        ('"It\'s mine!" said {name}. "No, it\'s mine!" said {fname}. They pulled and pulled until both of '
         "them felt {bad}."),
        ("They started to argue. Their voices got louder and louder, and soon neither of them was having "
         "any fun."),
        '"I saw it first!" cried {name}. "But I want it more!" cried {fname}. Nobody was smiling anymore.',
    ),
    (
        (
            ('{Helper} came over and asked what was wrong. "We both want the {toy}," said {name}. "Why '
             'don\'t you take turns?" said {helper}.'),
            ("{name} played with the {toy} first while {fname} counted to {count_to}. Then it was "
             "{fname}'s turn. Taking turns was much better than fighting."),
        ),
        (
            ("{name} stopped pulling and looked at {fname}'s sad face. \"I'm sorry,\" {he} said. \"Let's "
             'play with it together."'),
            ("So they made up a new game with the {toy}, one that needed two players. It was much more fun "
             "than playing alone."),
        ),
        (
            ("{fname} let go first. \"You can have it,\" {fhe} said quietly. {name} looked at the {toy}, "
             "and then at {fname}."),
            ("\"No,\" said {name}. \"It's more fun with you.\" {He} gave the {toy} to {fname} first, and "
             "they played with it together all afternoon."),
        ),
    ),
    (
        "{name} and {fname} shook hands and laughed about their silly fight.",
        "By the end of the day, the {toy} did not seem so important. Being friends was what mattered.",
        'Later, {helper} saw them playing together. "Now that is how friends play," {hhe} said.',
    ),
    (
        "sharing makes playing more fun",
        "saying sorry can fix a lot of things",
        "a friend is worth more than any toy",
    ),
)

# What was built, where, what went wrong, and what the builder learned from it.
_BUILDS: tuple[tuple[str, str, str, str], ...] = (
    ("sand castle", "the beach", "a big wave rolled in and washed it away",
     "I should build it farther from the water"),
    ("tower of blocks", "the living room", "the cat jumped on the table and knocked it over",
     "I need a wider bottom"),
    ("snowman", "the yard", "the warm sun came out and its head slid off", "I should build it in the shade"),
    ("birdhouse", "the garden", "the wind blew it off the branch and it broke",
     "I should tie it to the branch"),
    ("fort of branches", "the woods", "a strong wind blew it down", "I need to lean the branches together"),
    ("bridge of sticks", "the stream", "the water pushed it apart", "I should put big stones at each end"),
    ("house of cards", "the kitchen table", "someone opened the door and it all fell down",
     "I should close the door first"),
)


def _setup_broken(rng: random.Random, v: dict[str, str]) -> None:
    v["build"], v["build_place"], v["accident"], v["fix"] = rng.choice(_BUILDS)
    v["spent"] = rng.choice(("all morning", "the whole afternoon", "a long time", "hours"))


_BROKEN = _Plot(
    _setup_broken,
    (
        ("{Time}, {name} spent {spent} building a {build} at {build_place}. It was the best {build} {he} "
         "had ever made. But then {accident}."),
        ("{name} worked very hard on a {build} at {build_place}. {He} spent {spent} on it. Just as {he} "
         "finished, {accident}."),
    ),
    (
        ('{name} looked at the pieces. "All my hard work is gone," {he} said, and {his} eyes filled with '
         "tears."),
        "{name} sat down and put {his} head in {his} hands. {He} felt very {bad}.",
        '"It\'s not fair!" {name} shouted. {He} was {bad} and tired.',
    ),
    (
        (
            ('{fname} sat down next to {name}. "Let\'s build a new one together," {fhe} said. "I will help '
             'you."'),
            ("They worked side by side. {name} did the bottom, and {fname} did the top. This time the "
             '{build} was even bigger and better than before. "We did it!" they cheered.'),
        ),
        (
            ('{Helper} came and looked at the mess. "Every builder has to start again sometimes," {hhe} '
             'said. "What did you learn?"'),
            ('{name} thought about it. "{fix}," {he} said. {He} built the {build} again, and this time it '
             "stayed up."),
        ),
    ),
    (
        "{name} looked at the new {build} and felt {good}.",
        "{name} took a picture of the {build} so {he} would always remember it.",
        "Even {helper} came to see it. \"What a wonderful {build}!\" {hhe} said.",
    ),
    (
        "it is all right to start again",
        "mistakes help you do better next time",
        "hard work is easier with a friend",
    ),
)


def _setup_lost_way(rng: random.Random, v: dict[str, str]) -> None:
    v["landmark"] = rng.choice(_LANDMARKS)
    v["guide"] = rng.choice(("deer", "rabbit", "owl", "squirrel", "old dog", "goose", "fox"))
    v["color"] = rng.choice(("blue", "yellow", "orange", "purple", "white", "spotted"))
    v["path"] = rng.choice(("stream", "stone wall", "dirt road", "row of tall trees"))


_LOST_WAY = _Plot(
    _setup_lost_way,
    (
        ("{Time}, {name} saw a beautiful {color} butterfly at {outing}. {He} followed it past the trees, "
         "over a little hill, and across a field. When the butterfly flew away, {name} looked around. {He} "
         "did not know where {he} was!"),
        ("{Time}, {name} went into the woods to pick berries. {He} walked and walked, filling {his} "
         "basket. Soon the trees all looked the same, and {name} could not find the path home."),
        ("{Time}, {name} chased a rolling ball down a long, winding path. When {he} finally caught it, "
         "nothing around {him} looked familiar."),
    ),
    (
        '"I am lost," {name} said. {He} felt very scared.',
        '{name} sat down on a log. {His} heart was beating fast. "What should I do?" {he} wondered.',
        "{name} wanted to cry, but {he} took a deep breath instead.",
    ),
    (
        (
            ('Then {he} remembered what {helper} always said: "If you get lost, look for something you '
             'know." {name} looked around and saw the {landmark} far away.'),
            ("{He} walked toward the {landmark}, and soon {he} saw {his} home. {Helper} was waiting at the "
             'door. "There you are!" {hhe} said, and gave {name} a big hug.'),
        ),
        (
            ('Just then, {fname} came along the path. "{name}! What are you doing here?" {fhe} asked. "I '
             'am lost," said {name}. "I know the way," said {fname}. "Follow me!"'),
            ("They walked together past the {landmark} and along the {path}. Soon they could see {name}'s "
             "house. {name} was so glad to be home."),
        ),
        (
            'A kind {guide} saw {name} and asked, "Are you lost, little one?" {name} nodded.',
            ("The {guide} led {name} back along the {path} to the {landmark}. From there, {name} knew the "
             'way home. "Thank you!" {he} called.'),
        ),
    ),
    (
        "That evening, {name} told {fname} all about the adventure.",
        "{name} was tired, but {he} felt {good} and safe.",
        "After a warm bath and a good dinner, the scary part felt very far away.",
    ),
    (
        "it is important to stay calm when you are lost",
        "you should always know the way back home",
        "looking for things you know can help you find your way",
    ),
)


def _setup_rain(rng: random.Random, v: dict[str, str]) -> None:
    v["day"] = rng.choice(("Saturday", "Sunday", "the first day of summer", "Friday afternoon"))
    v["food"] = rng.choice(("sandwiches and apples", "cheese and crackers", "muffins and grapes", "pie"))


_RAIN = _Plot(
    _setup_rain,
    (
        ("{name} and {fname} had planned a picnic at {outing} for {day}. They packed {food} and a big "
         "blanket. But that morning, dark clouds covered the sky and rain started to pour."),
        ("{name} had waited all week for a picnic at {outing} with {fname}. But when the day came and {he} "
         "opened the door, it was raining hard."),
    ),
    (
        '"Now the whole day is ruined," {name} said with a sigh.',
        '{name} pressed {his} nose against the window. "Why does it have to rain today?" {he} asked.',
        "{name} felt {bad}. {He} watched the raindrops race down the glass.",
    ),
    (
        (
            ('"We can have our picnic inside!" said {fname}. They spread the blanket on the living room '
             "floor."),
            ("They ate {food} and told funny stories while the rain tapped on the roof. It was the coziest "
             "picnic ever."),
        ),
        (
            ('{Helper} had an idea. "Let\'s build a fort!" {hhe} said. They used chairs, pillows, and '
             "blankets."),
            ("Inside the fort, they read books with a flashlight and played games. When the rain stopped, "
             "a rainbow appeared in the sky."),
        ),
        (
            '{fname} found some paper and crayons. "Let\'s draw the day we wanted to have," {fhe} said.',
            ("They drew the sun, the grass, the food, and even a few ants. When they were done, the rain "
             "stopped and a bright rainbow came out."),
        ),
    ),
    (
        '"Rainy days can be fun too," said {name}.',
        "{name} decided that {he} did not mind the rain after all.",
        ("The next day was sunny, and they went to {outing} anyway. But {name} still liked the rainy day "
         "best."),
    ),
    (
        "a change of plans can still lead to a great day",
        "fun can be found anywhere",
        "what matters is who you are with",
    ),
)

# A skill to learn and what goes wrong on the first tries; {placeholders} are filled later.
_SKILLS: tuple[tuple[str, str], ...] = (
    ("ride a bike", "the bike wobbled and {he} fell over"),
    ("whistle", "only air came out"),
    ("tie {his} shoes", "the laces got all tangled"),
    ("jump rope", "the rope caught on {his} feet"),
    ("fly a kite", "the kite crashed into the grass"),
    ("juggle three balls", "the balls bounced all over the floor"),
    ("skate", "{he} slipped and sat down with a bump"),
    ("read a whole book", "the big words were too hard"),
    ("climb the big tree", "{he} slid back down to the ground"),
    ("swim across the pool", "{he} swallowed some water and had to stop"),
    ("play the flute", "it made a squeaky noise"),
)


def _setup_learn(rng: random.Random, v: dict[str, str]) -> None:
    v["skill"], v["fail"] = rng.choice(_SKILLS)
    v["meal"] = rng.choice(("breakfast", "lunch", "school", "dinner"))
    v["weekday"] = rng.choice(("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "morning", "evening"))


_LEARN = _Plot(
    _setup_learn,
    (
        ("{name} really wanted to learn to {skill}. {fname} could already do it, and it looked like so "
         "much fun. The first time {name} tried, {fail}."),
        ("{Time}, {name} decided it was time to learn to {skill}. {He} tried once, and {fail}. {He} tried "
         "again, and the same thing happened."),
    ),
    (
        '"I will never be able to do it," {name} said, and {he} felt {bad}.',
        '{name} stamped {his} foot. "This is too hard!" {he} said.',
        "{name} wanted to give up. {He} went to sit alone under a tree.",
    ),
    (
        (
            '"Everyone gets it wrong at first," said {fname}. "Try again, and I will help you."',
            ("Every day after {meal}, {name} practiced with {fname}. Day by day, {he} got a little better. "
             "Then one {weekday}, {he} did it! {He} could {skill} all by {himself}!"),
        ),
        (
            ('{Helper} sat down next to {name}. "Let\'s practice a little bit each day," {hhe} said. "Big '
             'things take time."'),
            ("So {name} practiced a little every day. It was hard, but {he} did not give up. After a week, "
             "{he} could {skill}, and {helper} clapped and cheered."),
        ),
    ),
    (
        "{name} felt so {good}. {He} wanted to show everyone.",
        '"I did it!" {name} shouted. "I really did it!"',
        "Now {name} wanted to learn something new every week.",
    ),
    (
        "practice helps you get better",
        "you should never give up",
        "everyone starts as a beginner",
    ),
)

# A creature in trouble and how the hero's kindness plays out; {placeholders} are filled later.
_CREATURES: tuple[tuple[str, str, str], ...] = (
    (
        "a little bird with a hurt wing",
        ('{name} carried the bird home in a soft box. With {helper}\'s help, {he} gave it water and seeds '
         "every day."),
        ("After a week, the wing was better. The bird flew up into the sky, but it came back every morning "
         "to sing at {name}'s window."),
    ),
    (
        "a tiny kitten, all alone and crying",
        "{name} and {fname} made posters that said FOUND KITTEN and put them up all around town.",
        ("The next day, a girl came running. \"That's my kitten!\" she said. She was so happy that she "
         "invited them to play every week."),
    ),
    (
        "a hungry squirrel who could not find any nuts",
        "{name} ran home and came back with a handful of nuts and some apple pieces.",
        "The squirrel ate them all and chattered happily. From then on, it followed {name} everywhere.",
    ),
    (
        "a small turtle lying on its back",
        "{name} gently turned the turtle over and carried it to the edge of the pond.",
        "The turtle blinked at {name} and then slid into the cool water. {name} was sure it said thank you.",
    ),
    (
        "a puppy tangled in an old rope",
        "{name} and {fname} carefully untied the knots, one by one, while the puppy held very still.",
        ("When it was free, the puppy licked their faces and wagged its tail so hard that its whole body "
         "wiggled."),
    ),
)


def _setup_kind(rng: random.Random, v: dict[str, str]) -> None:
    v["creature"], v["kind_help"], v["kind_end"] = rng.choice(_CREATURES)
    v["sound"] = rng.choice(("a soft sound", "a tiny cry", "a little squeak", "a sad noise"))
    v["hide"] = rng.choice(("a bush", "a pile of leaves", "an old bench", "a big rock", "the hedge"))


_KIND = _Plot(
    _setup_kind,
    (
        ("{Time}, while walking through {outing} with {fname}, {name} heard {sound}. Under {hide}, {he} "
         "found {creature}."),
        ("{Time}, {name} and {fname} were on their way to {outing} when they heard {sound}. They looked "
         "under {hide} and found {creature}."),
    ),
    (
        '"Poor little thing," {name} said gently. "I will help you."',
        "{name} felt {bad} for it. {He} knew {he} had to do something.",
        '"What should we do?" asked {fname}. {name} thought for a moment.',
    ),
    (("{kind_help}", "{kind_end}"),),
    (
        "{name} felt warm inside. Helping others felt good.",
        "{name} and {fname} smiled at each other. It had been a very good day.",
        "When {helper} heard the story, {hhe} said, \"I am proud of you.\"",
    ),
    (
        "even small acts of kindness matter",
        "it feels good to help others",
        "everyone needs a friend sometimes",
    ),
)

_GIFTS: tuple[str, ...] = (
    "collected pretty shells and made a necklace",
    "painted a picture of the two of them playing together",
    "wrote a little song just for {fhim}",
    "baked cookies shaped like stars with {helper}",
    "made a card with glitter and a big red heart",
    "carved a tiny wooden boat",
    "planted flower seeds in a painted pot",
    "made a crown out of paper and leaves",
)


def _setup_gift(rng: random.Random, v: dict[str, str]) -> None:
    v["gift"] = rng.choice(_GIFTS)


_GIFT = _Plot(
    _setup_gift,
    (
        ("{fname}'s birthday was coming soon, and {name} wanted to give {fhim} something special. But "
         "{name} did not have any money to buy a present."),
        "{Time}, {name} found out that {fname}'s birthday was the very next day. {He} had no present at all!",
    ),
    (
        '"What can I give {fhim}?" {name} wondered. {He} felt {bad}.',
        "{name} looked through {his} toys, but nothing seemed right. {He} sat on the floor and sighed.",
    ),
    (
        (
            '{Helper} said, "The best presents come from the heart. Why don\'t you make something?"',
            ("So {name} {gift}. On the birthday, {fname} opened the gift. \"I love it!\" {fhe} said. \"It's "
             'the best present ever!"'),
        ),
        (
            "Then {name} had an idea. {He} knew exactly what {fname} would like.",
            ("{He} {gift}. When {fname} saw it, {fhis} eyes grew wide. \"You made this for me?\" {fhe} "
             "asked, and gave {name} a big hug."),
        ),
    ),
    (
        "{name} was so {good} that {fname} liked the present.",
        "It was the best birthday party ever, and {name} sang the loudest of all.",
        "{fname} kept the present on {fhis} shelf for years and years.",
    ),
    (
        "the best presents come from the heart",
        "giving can feel even better than getting",
        "a gift you make yourself is a gift of your time",
    ),
)

_PLOTS: tuple[_Plot, ...] = (_LOST, _STUCK, _FEAR, _SHARE, _BROKEN, _LOST_WAY, _RAIN, _LEARN, _KIND, _GIFT)


def _character(rng: random.Random, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """A story character: a person with a name, and the phrase that introduces them ('a shy fox')."""
    person = _person(rng, exclude)
    if rng.random() < 0.4:
        kind = "girl" if person["he"] == "she" else "boy"
    else:
        kind = rng.choice(_ANIMALS)
    person["intro"] = _a(f"{rng.choice(_HERO_ADJECTIVES)} {kind}")
    return person


def _story_vars(rng: random.Random) -> dict[str, str]:
    """The template variables shared by all plots.

    The hero's keys are bare (name, he, His, ...); the friend's start with f and the helper's with h.
    A capitalized key (He, Helper, Outing) is the form that starts a sentence.
    """
    hero = _character(rng)
    friend = _character(rng, exclude=(hero["name"],))
    helper, helper_he = rng.choice(_HELPERS)
    helper_pronouns = _SHE if helper_he == "she" else _HE
    activity, activity2 = rng.sample(_ACTIVITIES, 2)
    bad, bad2 = rng.sample(_BAD_FEELINGS, 2)
    good, good2 = rng.sample(_GOOD_FEELINGS, 2)
    trait, trait2 = rng.sample(_TRAITS, 2)
    place = rng.choice(_PLACES)
    outing = rng.choice(_OUTINGS)
    return {
        **{key: value for key, value in hero.items() if key != "intro"},
        "hero_a": hero["intro"],
        "hero_A": _cap(hero["intro"]),
        "fname": friend["name"],
        "fhe": friend["he"],
        "fHe": friend["He"],
        "fhim": friend["him"],
        "fhis": friend["his"],
        "friend_a": friend["intro"],
        "helper": helper,
        "Helper": _cap(helper),
        "hhe": helper_pronouns["he"],
        "hHe": helper_pronouns["He"],
        "hhim": helper_pronouns["him"],
        "place": place,
        "Place": _cap(place),
        "family": rng.choice(_FAMILIES_AT_HOME),
        "activity": activity,
        "activity2": activity2,
        "trait": trait,
        "trait2": trait2,
        "Time": _cap(rng.choice(_TIMES)),
        "outing": outing,
        "Outing": _cap(outing),
        "bad": bad,
        "bad2": bad2,
        "good": good,
        "good2": good2,
        "a_bad": _a(bad),
        "a_good2": _a(good2),
    }


def _story(rng: random.Random) -> str:
    """One story of 80 to 250 words: an introduction, a problem, help, and a resolution."""
    v = _story_vars(rng)
    plot = rng.choice(_PLOTS)
    plot.setup(rng, v)
    v["lesson"] = rng.choice(plot.lessons)

    def fill(template: str) -> str:
        # Two passes: plot texts chosen in setup may themselves contain placeholders.
        text = template.format_map(v)
        return text.format_map(v) if "{" in text else text

    if rng.random() < 0.5:
        intro = [rng.choice(_OPENINGS_WITH_PLACE)]
    else:
        intro = [rng.choice(_OPENINGS_WITHOUT_PLACE), rng.choice(_HOMES)]
    intro.append(rng.choice(_LIKES))
    if rng.random() < 0.5:
        intro.insert(len(intro) - rng.randint(0, 1), rng.choice(_CHARACTER_SENTENCES))
    intro.append(rng.choice(_FRIEND_INTROS))
    help_text, resolution = rng.choice(plot.solutions)
    ending = [resolution, rng.choice(plot.afters)]
    # At most one closing states the lesson, so it is never repeated; the other kind may follow it.
    closings = [rng.choice(_LESSON_CLOSINGS)] if rng.random() < 0.6 else []
    if not closings or rng.random() < 0.6:
        closings.append(rng.choice(_CLOSINGS))

    paragraphs = [intro, [rng.choice(plot.problems), rng.choice(plot.reactions)], [help_text]]
    # Vary the paragraph layout (3 to 5 paragraphs) so no single shape dominates.
    layout = rng.random()
    if layout < 0.25:
        paragraphs[1].append(help_text)
        paragraphs.pop()
        paragraphs.append(ending + closings)
    elif layout < 0.6:
        paragraphs.append(ending + closings)
    else:
        paragraphs.append(ending)
        paragraphs.append(closings)
    return "\n\n".join(" ".join(fill(sentence) for sentence in paragraph) for paragraph in paragraphs)


# --------------------------------------------------------------------------------------------------
# Math word problems
# --------------------------------------------------------------------------------------------------
#
# Each family returns (question, step lines, answer). Every step line holds exactly one calculator
# annotation, written GSM8K-style as "<spaced expression> = <<expression=value>>value", and the answer
# is the value of the last step. Operands are chosen so that every intermediate value is an integer.

_OPERATOR = re.compile(r"([+\-*/])")


def _eq(expression: str, value: int, money: bool = False) -> str:
    spaced = _OPERATOR.sub(r" \1 ", expression)
    return f"{spaced} = {'$' if money else ''}<<{expression}={value}>>{value}"


_Family = Callable[[random.Random], tuple[str, list[str], int]]

_TIMES_WORDS: dict[int, str] = {2: "twice", 3: "three times", 4: "four times", 5: "five times"}
_NUMBER_WORDS: dict[int, str] = {
    1: "one", 2: "two", 3: "three", 4: "four", 5: "five", 6: "six", 7: "seven", 8: "eight",
}
_FRIEND_GROUPS: tuple[str, ...] = ("friends", "classmates", "cousins", "teammates", "neighbors")
_COLLECTIBLES: tuple[str, ...] = (
    "marbles", "stickers", "baseball cards", "stamps", "seashells", "beads", "crayons", "coins",
    "toy cars", "comic books", "buttons", "postcards", "rocks", "trading cards", "pencils",
)

_SHOP_ITEMS: tuple[tuple[str, int, int], ...] = (
    ("notebooks", 2, 5), ("pencils", 1, 3), ("apples", 1, 2), ("juice boxes", 1, 3), ("comic books", 3, 8),
    ("toy cars", 4, 9), ("packs of stickers", 2, 4), ("cupcakes", 2, 4), ("bags of chips", 1, 3),
    ("sandwiches", 4, 7), ("bottles of water", 1, 2), ("puzzles", 6, 12), ("candles", 2, 5),
    ("balloons", 1, 2), ("plants", 5, 10), ("t-shirts", 8, 15), ("pairs of socks", 3, 6), ("mugs", 4, 8),
    ("markers", 1, 3), ("erasers", 1, 2), ("loaves of bread", 2, 4), ("books", 5, 12), ("hats", 6, 14),
)
_STORES: tuple[str, ...] = (
    "the store", "the market", "a bookstore", "the school fair", "a toy shop", "the bakery",
    "the corner shop", "a garage sale", "the mall", "the farmers market",
)


def _shopping(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    picks = rng.sample(_SHOP_ITEMS, rng.choice((1, 2, 2, 3)))
    buys = [(rng.randint(2, 8), rng.randint(low, high), item) for item, low, high in picks]
    each = rng.choice(("{q} {item} for ${price} each", "{q} {item} at ${price} apiece",
                       "{q} {item} that cost ${price} each"))
    listing = _join([each.format(q=q, item=item, price=price) for q, price, item in buys])
    costs = [q * price for q, price, _ in buys]
    lines = [
        rng.choice(("The {item} cost {calc}.", "{He} pays {calc} for the {item}.")).format(
            item=item, calc=_eq(f"{q}*{price}", q * price, money=True), **p
        )
        for q, price, item in buys
    ]
    total = sum(costs)
    intro = rng.choice(("{name} goes to {store} and buys {listing}.", "At {store}, {name} buys {listing}."))
    question = intro.format(store=rng.choice(_STORES), listing=listing, **p)
    if len(buys) > 1 and rng.random() < 0.4:
        ask = rng.choice((" How much does {he} spend in all?", " How much money does {he} spend in total?"))
        question += ask.format(**p)
        lines.append(f"In total, {p['he']} spends {_eq('+'.join(map(str, costs)), total, money=True)}.")
        return question, lines, total
    bill = next(b for b in (10, 20, 50, 100, 200, 500) if b > total)
    question += rng.choice((
        " {He} pays with a ${bill} bill. How much change does {he} get back?",
        " {He} hands the cashier ${bill}. How much change should {he} receive?",
    )).format(bill=bill, **p)
    if len(buys) > 1 and rng.random() < 0.5:
        lines.append(f"Altogether, {p['he']} spends {_eq('+'.join(map(str, costs)), total, money=True)}.")
        change_expression = f"{bill}-{total}"
    else:
        change_expression = "-".join(map(str, [bill, *costs]))
    lines.append(f"So {p['his']} change is {_eq(change_expression, bill - total, money=True)}.")
    return question, lines, bill - total


_TRAVEL: tuple[tuple[str, int, int], ...] = (
    ("drives", 30, 70), ("bikes", 8, 16), ("walks", 2, 4), ("rides a bus", 20, 50), ("rows a boat", 3, 6),
    ("rides a horse", 6, 12), ("skates", 5, 10), ("sails", 4, 12),
)


def _rates(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    variant = rng.randrange(4)
    if variant == 0:
        verb, low, high = rng.choice(_TRAVEL)
        s1, s2 = rng.randint(low, high), rng.randint(low, high)
        h1, h2 = rng.randint(2, 5), rng.randint(2, 4)
        d1, d2 = s1 * h1, s2 * h2
        question = (f"{p['name']} {verb} at {s1} miles per hour for {h1} hours. Then {p['he']} goes at "
                    f"{s2} miles per hour for {h2} more hours. How many miles does {p['he']} travel in "
                    f"all?")
        lines = [
            f"In the first part, {p['he']} travels {_eq(f'{s1}*{h1}', d1)} miles.",
            f"In the second part, {p['he']} travels {_eq(f'{s2}*{h2}', d2)} miles.",
            f"In all, {p['he']} travels {_eq(f'{d1}+{d2}', d1 + d2)} miles.",
        ]
        return question, lines, d1 + d2
    if variant == 1:
        vehicle, low, high = rng.choice((
            ("car", 30, 70), ("bus", 20, 50), ("train", 40, 90), ("truck", 30, 60), ("cyclist", 8, 16),
            ("ship", 10, 30), ("plane", 200, 500),
        ))
        speed, hours, later = rng.randint(low, high), rng.randint(2, 5), rng.randint(2, 8)
        distance = speed * hours
        question = rng.choice((
            (f"{p['name']} rides a {vehicle} that travels {distance} miles in {hours} hours. At the same "
             f"speed, how many miles will it travel in {later} hours?"),
            (f"{p['name']} watched a {vehicle} cover {distance} miles in {hours} hours. If it keeps the "
             f"same speed, how far will it go in {later} hours?"),
        ))
        lines = [
            f"The speed is {_eq(f'{distance}/{hours}', speed)} miles per hour.",
            f"In {later} hours it will travel {_eq(f'{speed}*{later}', speed * later)} miles.",
        ]
        return question, lines, speed * later
    if variant == 2:
        per_hour, hours, days = rng.randint(5, 30), rng.randint(2, 3), rng.randint(2, 9)
        per_day = per_hour * hours
        pages = per_day * days
        question = (f"{p['name']} reads {per_hour} pages an hour and reads for {hours} hours every day. "
                    f"How many days will it take {p['him']} to finish a book with {pages} pages?")
        lines = [
            f"Each day {p['he']} reads {_eq(f'{per_hour}*{hours}', per_day)} pages.",
            f"It will take {p['him']} {_eq(f'{pages}/{per_day}', days)} days.",
        ]
        return question, lines, days
    thing = rng.choice(("toys", "cookies", "bottles", "boxes", "cans", "shirts", "pens", "buttons", "cups"))
    rate, hours = rng.randint(2, 15), rng.randint(2, 8)
    minutes = hours * 60
    question = rng.choice((
        (f"A machine in {p['name']}'s factory makes {rate} {thing} every minute. How many {thing} does it "
         f"make in {hours} hours?"),
        (f"{p['name']} runs a line that packs {rate} {thing} per minute. How many {thing} are packed in "
         f"{hours} hours?"),
    ))
    lines = [
        f"There are {_eq(f'{hours}*60', minutes)} minutes in {hours} hours.",
        f"So {_eq(f'{minutes}*{rate}', minutes * rate)} {thing} are made.",
    ]
    return question, lines, minutes * rate


def _ages(rng: random.Random) -> tuple[str, list[str], int]:
    a = _person(rng)
    b = _person(rng, exclude=(a["name"],))
    variant = rng.randrange(3)
    later = rng.randint(2, 10)
    if variant == 0:
        c = _person(rng, exclude=(a["name"], b["name"]))
        c_age, times, gap = rng.randint(2, 9), rng.randint(2, 4), rng.randint(2, 12)
        b_age = c_age * times
        a_age = b_age + gap
        question = (f"{a['name']} is {gap} years older than {b['name']}. {b['name']} is "
                    f"{_TIMES_WORDS[times]} as old as {c['name']}, who is {c_age} years old. How old will "
                    f"{a['name']} be in {later} years?")
        lines = [
            f"{b['name']} is {_eq(f'{c_age}*{times}', b_age)} years old.",
            f"{a['name']} is {_eq(f'{b_age}+{gap}', a_age)} years old.",
            f"In {later} years, {a['name']} will be {_eq(f'{a_age}+{later}', a_age + later)} years old.",
        ]
        return question, lines, a_age + later
    if variant == 1:
        sibling = "sister" if b["he"] == "she" else "brother"
        b_age, times = rng.randint(2, 12), rng.randint(2, 3)
        a_age = b_age * times
        question = (f"{a['name']} is {_TIMES_WORDS[times]} as old as {a['his']} {sibling} {b['name']}, "
                    f"who is {b_age}. In {later} years, what will be the sum of their ages?")
        lines = [
            f"{a['name']} is {_eq(f'{b_age}*{times}', a_age)} years old.",
            f"In {later} years, {a['name']} will be {_eq(f'{a_age}+{later}', a_age + later)}.",
            f"In {later} years, {b['name']} will be {_eq(f'{b_age}+{later}', b_age + later)}.",
            f"Together they will be {_eq(f'{a_age + later}+{b_age + later}', a_age + b_age + 2 * later)}.",
        ]
        return question, lines, a_age + b_age + 2 * later
    parent = rng.choice(("mother", "father", "aunt", "uncle"))
    parent_he = "she" if parent in ("mother", "aunt") else "he"
    born_at, child_age = rng.randint(20, 38), rng.randint(2, 15)
    parent_age = born_at + child_age
    question = (f"{a['name']}'s {parent} is {parent_age} years old. {_cap(parent_he)} was {born_at} years "
                f"old when {a['name']} was born. How old will {a['name']} be in {later} years?")
    lines = [
        f"{a['name']} is {_eq(f'{parent_age}-{born_at}', child_age)} years old now.",
        f"In {later} years, {a['he']} will be {_eq(f'{child_age}+{later}', child_age + later)} years old.",
    ]
    return question, lines, child_age + later


_FRACTIONS: tuple[tuple[int, int, str], ...] = (
    (1, 2, "half"), (1, 3, "one third"), (1, 4, "one quarter"), (1, 5, "one fifth"), (2, 3, "two thirds"),
    (3, 4, "three quarters"), (2, 5, "two fifths"), (3, 5, "three fifths"), (1, 6, "one sixth"),
)
_RELATIVES: tuple[str, ...] = (
    "sister", "brother", "cousin", "mom", "dad", "grandma", "best friend", "neighbor", "teacher",
)


def _fraction_expression(total: int, num: int, den: int) -> str:
    return f"{total}/{den}" if num == 1 else f"{total}*{num}/{den}"


def _fractions(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    num, den, word = rng.choice(_FRACTIONS)
    frac = word if rng.random() < 0.6 else f"{num}/{den}"
    things = rng.choice(_COLLECTIBLES)
    variant = rng.randrange(3)
    if variant == 0:
        second = rng.choice(((2, "half"), (3, "one third"), (4, "one quarter")))
        total = den * second[0] * rng.randint(2, max(2, 240 // (den * second[0])))
        given = total * num // den
        rest = total - given
        given2 = rest // second[0]
        friend = _person(rng, exclude=(p["name"],))["name"]
        question = (f"{p['name']} has {total} {things}. {p['He']} gives {frac} of them to {friend}. Then "
                    f"{p['he']} gives {second[1]} of the {things} that are left to {p['his']} "
                    f"{rng.choice(_RELATIVES)}. How many {things} does {p['name']} have now?")
        lines = [
            f"{p['He']} gives {friend} {_eq(_fraction_expression(total, num, den), given)} {things}.",
            f"That leaves {_eq(f'{total}-{given}', rest)} {things}.",
            f"{p['He']} then gives away {_eq(f'{rest}/{second[0]}', given2)} {things}.",
            f"So {p['he']} has {_eq(f'{rest}-{given2}', rest - given2)} {things} left.",
        ]
        return question, lines, rest - given2
    if variant == 1:
        total = den * rng.randint(2, 30)
        used = total * num // den
        if rng.random() < 0.5:
            question = (f"{p['name']} had {total} {things}. {p['He']} used {frac} of them for a school "
                        f"project. How many {things} does {p['he']} have left?")
            gone = "were used"
        else:
            question = (f"There were {total} {things} in a box. {p['name']} took {frac} of them. How many "
                        f"{things} are still in the box?")
            gone = "were taken"
        lines = [
            f"{_cap(_eq(_fraction_expression(total, num, den), used))} {things} {gone}.",
            f"There are {_eq(f'{total}-{used}', total - used)} {things} left.",
        ]
        return question, lines, total - used
    people, event, group = rng.choice((
        ("children", "at a birthday party", "wearing hats"),
        ("students", "on the school trip", "in the choir"),
        ("guests", "at a wedding", "dancing"), ("players", "at the soccer camp", "under ten years old"),
        ("people", "at the concert", "standing"), ("runners", "in the race", "wearing blue shirts"),
        ("animals", "on the farm", "sheep"), ("books", "in the library cart", "picture books"),
    ))
    total = den * rng.randint(3, 40)
    part = total * num // den
    question = (f"{p['name']} counts {total} {people} {event}. {_cap(frac)} of them are {group}. How many "
                f"of the {people} are not {group}?")
    lines = [
        f"{_cap(_eq(_fraction_expression(total, num, den), part))} {people} are {group}.",
        f"So {_eq(f'{total}-{part}', total - part)} {people} are not {group}.",
    ]
    return question, lines, total - part


_SALE_ITEMS: tuple[tuple[str, str, int, int], ...] = (
    ("jacket", "jackets", 2, 6), ("pair of shoes", "pairs of shoes", 2, 5), ("lamp", "lamps", 1, 4),
    ("backpack", "backpacks", 1, 3), ("board game", "board games", 1, 3), ("bike", "bikes", 5, 15),
    ("chair", "chairs", 2, 5), ("video game", "video games", 2, 4), ("watch", "watches", 3, 10),
    ("dress", "dresses", 2, 6), ("tent", "tents", 4, 12),
)


def _percentages(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    variant = rng.randrange(3)
    if variant == 0:
        one, many, low, high = rng.choice(_SALE_ITEMS)
        # A price that is a multiple of 20 times a percentage that is a multiple of 5 is a whole number.
        price, pct, count = 20 * rng.randint(low, high), 5 * rng.randint(1, 10), rng.randint(1, 4)
        change = price * pct // 100
        if rng.random() < 0.7:
            new_price = price - change
            question = f"A {one} costs ${price}. It is on sale for {pct}% off."
            first = f"The discount is {_eq(f'{price}*{pct}/100', change, money=True)}."
            second = f"The sale price is {_eq(f'{price}-{change}', new_price, money=True)}."
        else:
            new_price = price + change
            question = f"A {one} cost ${price} last year. This year the price went up by {pct}%."
            first = f"The price went up by {_eq(f'{price}*{pct}/100', change, money=True)}."
            second = f"The new price is {_eq(f'{price}+{change}', new_price, money=True)}."
        if count == 1:
            return question + f" How much does {p['name']} pay for one {one}?", [first, second], new_price
        question += f" How much does {p['name']} pay for {count} {many}?"
        pays = _eq(f"{new_price}*{count}", new_price * count, money=True)
        total = f"For {count} {many}, {p['he']} pays {pays}."
        return question, [first, second, total], new_price * count
    if variant == 1:
        bill, pct = 20 * rng.randint(2, 15), rng.choice((10, 15, 20, 25))
        tip = bill * pct // 100
        meal = rng.choice(("dinner", "lunch", "breakfast", "brunch", "a birthday meal", "a holiday dinner"))
        question = (f"{p['name']}'s family pays ${bill} for {meal}. They leave a {pct}% tip. How much do "
                    f"they pay in total?")
        lines = [
            f"The tip is {_eq(f'{bill}*{pct}/100', tip, money=True)}.",
            f"In total they pay {_eq(f'{bill}+{tip}', bill + tip, money=True)}.",
        ]
        return question, lines, bill + tip
    total, pct = 20 * rng.randint(1, 15), 5 * rng.randint(1, 19)
    group, verb = rng.choice((
        ("students in {his} school", "walk to school"), ("trees in {his} orchard", "are apple trees"),
        ("books on {his} shelves", "are mysteries"), ("fish in {his} pond", "are goldfish"),
        ("cars on {his} street", "are red"), ("seats on {his} plane", "are taken"),
        ("songs on {his} playlist", "are slow songs"), ("photos on {his} phone", "show {his} dog"),
    ))
    group, verb = group.format(his=p["his"]), verb.format(his=p["his"])
    part = total * pct // 100
    question = f"{p['name']} counts {total} {group}. {pct}% of them {verb}. How many of them do not?"
    lines = [
        f"{_cap(_eq(f'{total}*{pct}/100', part))} of them {verb}.",
        f"So {_eq(f'{total}-{part}', total - part)} of them do not.",
    ]
    return question, lines, total - part


_DAILY_TASKS: tuple[tuple[str, str, str], ...] = (
    ("picks", "pick", "apples"), ("reads", "read", "pages"), ("collects", "collect", "seashells"),
    ("swims", "swim", "laps"), ("bakes", "bake", "cookies"), ("plants", "plant", "flowers"),
    ("folds", "fold", "paper cranes"), ("sells", "sell", "cups of lemonade"),
    ("writes", "write", "postcards"),
    ("paints", "paint", "rocks"), ("knits", "knit", "rows"), ("washes", "wash", "cars"),
)


def _multi_day(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    verb, base, things = rng.choice(_DAILY_TASKS)
    monday, more = rng.randint(3, 20), rng.randint(2, 10)
    tuesday = monday + more
    if rng.random() < 0.5:
        times = rng.randint(2, 3)
        wednesday = tuesday * times
        wed_text = f"{_TIMES_WORDS[times]} as many as on Tuesday"
        wed_line = f"On Wednesday, {p['he']} {verb} {_eq(f'{tuesday}*{times}', wednesday)} {things}."
    else:
        if tuesday % 2:
            tuesday += 1
            more += 1
        wednesday = tuesday // 2
        wed_text = "half as many as on Tuesday"
        wed_line = f"On Wednesday, {p['he']} {verb} {_eq(f'{tuesday}/2', wednesday)} {things}."
    question = (f"On Monday, {p['name']} {verb} {monday} {things}. On Tuesday, {p['he']} {verb} {more} "
                f"more {things} than on Monday. On Wednesday, {p['he']} {verb} {wed_text}.")
    lines = [f"On Tuesday, {p['he']} {verb} {_eq(f'{monday}+{more}', tuesday)} {things}.", wed_line]
    days = [monday, tuesday, wednesday]
    if rng.random() < 0.5:
        fewer = rng.randint(1, wednesday - 2)
        thursday = wednesday - fewer
        question += f" On Thursday, {p['he']} {verb} {fewer} fewer {things} than on Wednesday."
        lines.append(f"On Thursday, {p['he']} {verb} {_eq(f'{wednesday}-{fewer}', thursday)} {things}.")
        days.append(thursday)
    question += rng.choice((f" How many {things} does {p['he']} {base} in all?",
                            f" How many {things} is that altogether?"))
    total = sum(days)
    lines.append(f"Altogether, that is {_eq('+'.join(map(str, days)), total)} {things}.")
    return question, lines, total


def _groups(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    variant = rng.randrange(3)
    if variant == 0:
        people, vehicle, vehicles, low, high = rng.choice((
            ("students", "bus", "buses", 20, 50), ("campers", "van", "vans", 6, 12),
            ("scouts", "canoe", "canoes", 2, 4), ("players", "car", "cars", 3, 5),
            ("visitors", "boat", "boats", 8, 20), ("children", "minivan", "minivans", 5, 8),
            ("guests", "table", "tables", 4, 10), ("hikers", "tent", "tents", 2, 6),
        ))
        size = rng.randint(low, high)
        full, extra = rng.randint(2, 8), rng.randint(1, size - 1)
        total = full * size + extra
        question = (f"{p['name']} is planning a trip for {total} {people}. Each {vehicle} can hold {size} "
                    f"{people}. How many {vehicles} are needed so that everyone has a place?")
        carried = full * size
        lines = [
            f"{_cap(_NUMBER_WORDS[full])} full {vehicles} hold {_eq(f'{full}*{size}', carried)} {people}.",
            f"The other {_eq(f'{total}-{carried}', extra)} need one more {vehicle}.",
            f"So {_eq(f'{full}+1', full + 1)} {vehicles} are needed.",
        ]
        return question, lines, full + 1
    if variant == 1:
        things, boxes = rng.choice((
            ("cookies", "boxes"), ("eggs", "cartons"), ("muffins", "trays"), ("crayons", "packs"),
            ("apples", "bags"), ("cupcakes", "boxes"), ("pencils", "cases"), ("oranges", "crates"),
            ("stickers", "sheets"), ("photos", "albums"), ("flowers", "bunches"), ("socks", "drawers"),
        ))
        size, full = rng.randint(4, 12), rng.randint(3, 15)
        left = rng.randint(2, size - 1)
        total = size * full + left
        question = (f"{p['name']} has {total} {things}. {p['He']} puts them into {boxes} of {size}, "
                    f"filling as many {boxes} as {p['he']} can. How many {things} are left over?")
        lines = [
            f"{full} full {boxes} hold {_eq(f'{full}*{size}', full * size)} {things}.",
            f"So {_eq(f'{total}-{full * size}', left)} {things} are left over.",
        ]
        return question, lines, left
    things = rng.choice(_COLLECTIBLES)
    friends, each, keep = rng.randint(2, 8), rng.randint(2, 12), rng.randint(1, 15)
    total = friends * each + keep
    question = (f"{p['name']} has {total} {things}. {p['He']} keeps {keep} for {p['himself']} and shares "
                f"the rest equally among {friends} {rng.choice(_FRIEND_GROUPS)}. How many {things} does "
                f"each one get?")
    lines = [
        f"{p['He']} shares {_eq(f'{total}-{keep}', total - keep)} {things}.",
        f"Each one gets {_eq(f'{total - keep}/{friends}', each)} {things}.",
    ]
    return question, lines, each


def _area(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    variant = rng.randrange(3)
    length, width = rng.randint(5, 30), rng.randint(3, 20)
    if variant == 0:
        cost = rng.randint(2, 9)
        thing = rng.choice(("garden", "yard", "dog run", "vegetable patch", "playground", "chicken coop"))
        question = (f"{p['name']} wants to put a fence around a rectangular {thing} that is {length} feet "
                    f"long and {width} feet wide. The fence costs ${cost} per foot. How much will the "
                    f"fence cost?")
        perimeter = 2 * (length + width)
        if rng.random() < 0.5:
            lines = [
                f"The length and width add up to {_eq(f'{length}+{width}', length + width)} feet.",
                f"The perimeter is {_eq(f'{length + width}*2', perimeter)} feet.",
            ]
        else:
            lines = [f"The perimeter is {_eq(f'2*{length}+2*{width}', perimeter)} feet."]
        lines.append(f"The fence costs {_eq(f'{perimeter}*{cost}', perimeter * cost, money=True)}.")
        return question, lines, perimeter * cost
    if variant == 1:
        cost = rng.randint(2, 8)
        room = rng.choice(("bedroom", "living room", "classroom", "hallway", "playroom", "office"))
        area = length * width
        question = (f"{p['name']}'s {room} is {length} feet long and {width} feet wide. Carpet costs "
                    f"${cost} per square foot. How much will it cost to carpet the whole {room}?")
        lines = [
            f"The area is {_eq(f'{length}*{width}', area)} square feet.",
            f"The carpet costs {_eq(f'{area}*{cost}', area * cost, money=True)}.",
        ]
        return question, lines, area * cost
    per_box = rng.choice((2, 4, 5, 10))
    length = per_box * rng.randint(2, 6)
    area = length * width
    question = (f"{p['name']} is tiling a floor that is {length} feet long and {width} feet wide. Each "
                f"box of tiles covers {per_box} square feet. How many boxes of tiles does {p['he']} need?")
    lines = [
        f"The floor is {_eq(f'{length}*{width}', area)} square feet.",
        f"{p['He']} needs {_eq(f'{area}/{per_box}', area // per_box)} boxes.",
    ]
    return question, lines, area // per_box


_WANTED: tuple[tuple[str, int, int], ...] = (
    ("bike", 80, 300), ("video game", 40, 70), ("skateboard", 50, 120), ("guitar", 100, 250),
    ("pair of roller skates", 40, 90), ("telescope", 90, 200), ("tablet", 150, 400), ("tent", 60, 150),
    ("keyboard", 70, 180), ("soccer ball", 20, 40), ("drone", 90, 250), ("watch", 50, 150),
)


def _savings(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    thing, low, high = rng.choice(_WANTED)
    variant = rng.randrange(3)
    if variant == 0:
        # Keep the price near the item's usual range: it is what was saved plus whole weeks of saving.
        saved, weeks = rng.randint(0, low // 2), rng.randint(2, 15)
        weekly = rng.randint(max(1, (low - saved) // weeks), max(1, (high - saved) // weeks))
        price = saved + weekly * weeks
        question = (f"{p['name']} wants to buy a {thing} that costs ${price}. {p['He']} has already saved "
                    f"${saved} and saves ${weekly} every week. How many weeks will it take {p['him']} to "
                    f"have enough money?")
        lines = [
            f"{p['He']} still needs {_eq(f'{price}-{saved}', price - saved, money=True)}.",
            f"It will take {_eq(f'{price - saved}/{weekly}', weeks)} weeks.",
        ]
        return question, lines, weeks
    if variant == 1:
        earn, spend, weeks = rng.randint(8, 25), rng.randint(1, 7), rng.randint(2, 12)
        net = earn - spend
        price = net * weeks
        question = (f"{p['name']} earns ${earn} each week doing chores and spends ${spend} of it on "
                    f"snacks. {p['He']} saves the rest. How many weeks will it take {p['him']} to save "
                    f"${price} for a {thing}?")
        lines = [
            f"Each week {p['he']} saves {_eq(f'{earn}-{spend}', net, money=True)}.",
            f"It will take {_eq(f'{price}/{net}', weeks)} weeks.",
        ]
        return question, lines, weeks
    saved, weekly = rng.randint(5, 60), rng.randint(2, 15)
    weeks, gift = rng.randint(3, 12), rng.randint(5, 30)
    giver = rng.choice(("grandma", "grandpa", "aunt", "uncle", "parents"))
    put_in = weekly * weeks
    question = (f"{p['name']} has ${saved} in {p['his']} piggy bank. {p['He']} adds ${weekly} every week "
                f"for {weeks} weeks, and then {p['his']} {giver} gives {p['him']} ${gift}. How much money "
                f"does {p['he']} have now?")
    lines = [
        f"{p['He']} adds {_eq(f'{weekly}*{weeks}', put_in, money=True)} over {weeks} weeks.",
        f"Then {p['he']} has {_eq(f'{saved}+{put_in}', saved + put_in, money=True)}.",
        f"With the gift, {p['he']} has {_eq(f'{saved + put_in}+{gift}', saved + put_in + gift, money=True)}.",
    ]
    return question, lines, saved + put_in + gift


_BAKES: tuple[str, ...] = (
    "cookies", "muffins", "pancakes", "cupcakes", "brownies", "biscuits", "waffles", "rolls", "scones",
)
_CUP_INGREDIENTS: tuple[str, ...] = (
    "flour", "sugar", "milk", "oats", "yogurt", "cocoa", "berries", "chocolate chips", "raisins",
)
_OTHER_INGREDIENTS: tuple[str, ...] = ("eggs", "spoons of butter", "bananas", "pinches of salt", "lemons")


def _recipes(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    food = rng.choice(_BAKES)
    batch, scale = rng.choice((6, 8, 10, 12, 20, 24)), rng.randint(2, 5)
    wanted = batch * scale
    if rng.random() < 0.5:
        first, second = rng.sample(_CUP_INGREDIENTS, 2)
        a, b = rng.randint(2, 5), rng.randint(2, 4)
        question = (f"A recipe for {batch} {food} uses {a} cups of {first} and {b} cups of {second}. "
                    f"{p['name']} wants to make {wanted} {food}. How many cups of {first} and {second} "
                    f"does {p['he']} need in all?")
        lines = [
            f"{p['He']} needs to make the recipe {_eq(f'{wanted}/{batch}', scale)} times.",
            f"{p['He']} needs {_eq(f'{a}*{scale}', a * scale)} cups of {first}.",
            f"{p['He']} needs {_eq(f'{b}*{scale}', b * scale)} cups of {second}.",
            f"In all, {p['he']} needs {_eq(f'{a * scale}+{b * scale}', (a + b) * scale)} cups.",
        ]
        return question, lines, (a + b) * scale
    ingredient = rng.choice(_OTHER_INGREDIENTS + tuple(f"cups of {i}" for i in _CUP_INGREDIENTS))
    amount = rng.randint(2, 6)
    question = rng.choice((
        (f"{p['name']} uses {amount} {ingredient} to make {batch} {food}. How many {ingredient} does "
         f"{p['he']} need to make {wanted} {food}?"),
        (f"To bake {batch} {food}, you need {amount} {ingredient}. {p['name']} is baking {wanted} {food} "
         f"for a party. How many {ingredient} will {p['he']} use?"),
    ))
    lines = [
        f"{_cap(_eq(f'{wanted}/{batch}', scale))} batches are needed.",
        f"{p['He']} needs {_eq(f'{amount}*{scale}', amount * scale)} {ingredient}.",
    ]
    return question, lines, amount * scale


def _comparisons(rng: random.Random) -> tuple[str, list[str], int]:
    a = _person(rng)
    b = _person(rng, exclude=(a["name"],))
    things = rng.choice(_COLLECTIBLES)
    variant = rng.randrange(3)
    if variant == 0:
        x, times = rng.randint(3, 40), rng.randint(2, 5)
        y = x * times
        question = rng.choice((
            (f"{a['name']} has {x} {things}. {b['name']} has {_TIMES_WORDS[times]} as many {things} as "
             f"{a['name']}. How many more {things} does {b['name']} have than {a['name']}?"),
            (f"{b['name']} collected {_TIMES_WORDS[times]} as many {things} as {a['name']}, who collected "
             f"{x}. How many more {things} did {b['name']} collect?"),
        ))
        lines = [
            f"{b['name']} has {_eq(f'{x}*{times}', y)} {things}.",
            f"{b['name']} has {_eq(f'{y}-{x}', y - x)} more {things}.",
        ]
        return question, lines, y - x
    if variant == 1:
        x = rng.randint(5, 40)
        fewer = rng.randint(1, x - 2)
        y = 2 * x - fewer
        question = (f"{a['name']} has {x} {things}. {b['name']} has {fewer} fewer than twice as many "
                    f"{things} as {a['name']}. How many more {things} does {b['name']} have than "
                    f"{a['name']}?")
        lines = [
            f"Twice as many as {a['name']} is {_eq(f'{x}*2', 2 * x)} {things}.",
            f"{b['name']} has {_eq(f'{2 * x}-{fewer}', y)} {things}.",
            f"{b['name']} has {_eq(f'{y}-{x}', y - x)} more {things} than {a['name']}.",
        ]
        return question, lines, y - x
    c = _person(rng, exclude=(a["name"], b["name"]))
    x, more = rng.randint(5, 40), rng.randint(2, 20)
    y = x + more
    fewer = rng.randint(1, y - 2)
    z = y - fewer
    question = (f"{a['name']} has {x} {things}. {b['name']} has {more} more {things} than {a['name']}, and "
                f"{c['name']} has {fewer} fewer {things} than {b['name']}. How many {things} do they have "
                f"together?")
    lines = [
        f"{b['name']} has {_eq(f'{x}+{more}', y)} {things}.",
        f"{c['name']} has {_eq(f'{y}-{fewer}', z)} {things}.",
        f"Together they have {_eq(f'{x}+{y}+{z}', x + y + z)} {things}.",
    ]
    return question, lines, x + y + z


_JOBS: tuple[str, ...] = (
    "babysitting", "walking dogs", "mowing lawns", "washing cars", "tutoring", "working at a cafe",
    "helping at the library", "delivering newspapers", "working at the farm stand", "painting fences",
)


def _wages(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    job = rng.choice(_JOBS)
    rate = rng.randint(5, 25)
    if rng.random() < 0.5:
        hours, days, weeks = rng.randint(2, 8), rng.randint(2, 5), rng.randint(2, 4)
        per_day = rate * hours
        per_week = per_day * days
        question = (f"{p['name']} earns ${rate} an hour {job}. {p['He']} works {hours} hours a day, "
                    f"{days} days a week. How much does {p['he']} earn in {weeks} weeks?")
        lines = [
            f"Each day {p['he']} earns {_eq(f'{rate}*{hours}', per_day, money=True)}.",
            f"Each week {p['he']} earns {_eq(f'{per_day}*{days}', per_week, money=True)}.",
            f"In {weeks} weeks {p['he']} earns {_eq(f'{per_week}*{weeks}', per_week * weeks, money=True)}.",
        ]
        return question, lines, per_week * weeks
    saturday, sunday = rng.randint(2, 6), rng.randint(2, 6)
    hours = saturday + sunday
    earned = hours * rate
    spent = rng.randint(1, earned - 1)
    buy = rng.choice((
        "a game", "a new book", "a gift for a friend", "lunch", "movie tickets", "art supplies", "a plant",
    ))
    question = (f"{p['name']} earns ${rate} an hour {job}. {p['He']} works {saturday} hours on Saturday "
                f"and {sunday} hours on Sunday. Then {p['he']} spends ${spent} on {buy}. How much money "
                f"does {p['he']} have left?")
    lines = [
        f"{p['He']} works {_eq(f'{saturday}+{sunday}', hours)} hours.",
        f"{p['He']} earns {_eq(f'{hours}*{rate}', earned, money=True)}.",
        f"{p['He']} has {_eq(f'{earned}-{spent}', earned - spent, money=True)} left.",
    ]
    return question, lines, earned - spent


_AVERAGED: tuple[tuple[str, str, str, int, int], ...] = (
    ("scored", "points", "test", 60, 100), ("ran", "miles", "day", 2, 12), ("read", "pages", "night", 10, 60),
    ("sold", "cups of lemonade", "day", 5, 40), ("caught", "fish", "trip", 1, 15),
    ("picked", "strawberries", "morning", 10, 50), ("swam", "laps", "visit", 4, 30),
)


def _averages(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    verb, things, occasion, low, high = rng.choice(_AVERAGED)
    count = rng.choice((3, 4, 5))
    # Redraw until the last value, fixed by the chosen mean, is in range: the sum must divide evenly.
    while True:
        mean = rng.randint(low, high)
        values = [rng.randint(low, high) for _ in range(count - 1)]
        last = mean * count - sum(values)
        if low <= last <= high:
            break
    if rng.random() < 0.4:
        question = (f"{p['name']} {verb} {_join(list(map(str, values)))} {things} on {p['his']} first "
                    f"{_NUMBER_WORDS[count - 1]} {occasion}s. How many {things} does {p['he']} need on "
                    f"the next {occasion} to average {mean} {things} per {occasion}?")
        lines = [
            f"{p['He']} needs {_eq(f'{mean}*{count}', mean * count)} {things} in total.",
            f"So far {p['he']} has {_eq('+'.join(map(str, values)), sum(values))} {things}.",
            f"{p['He']} needs {_eq(f'{mean * count}-{sum(values)}', last)} {things} on the next {occasion}.",
        ]
        return question, lines, last
    values.append(last)
    total = sum(values)
    question = (f"{p['name']} {verb} {_join(list(map(str, values)))} {things} on {_NUMBER_WORDS[count]} "
                f"{occasion}s. What is the average number of {things} per {occasion}?")
    lines = [
        f"The total is {_eq('+'.join(map(str, values)), total)} {things}.",
        f"The average is {_eq(f'{total}/{count}', mean)} {things} per {occasion}.",
    ]
    return question, lines, mean


def _units(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    variant = rng.randrange(3)
    if variant == 0:
        dozens = rng.randint(2, 6)
        eggs = dozens * 12
        baking = rng.randint(2, eggs // 2)
        breakfast = rng.randint(2, eggs - baking - 2)
        used = baking + breakfast
        question = (f"{p['name']} buys {dozens} dozen eggs. {p['He']} uses {baking} eggs for baking and "
                    f"{breakfast} eggs for breakfast. How many eggs are left?")
        lines = [
            f"{p['He']} buys {_eq(f'{dozens}*12', eggs)} eggs.",
            f"{p['He']} uses {_eq(f'{baking}+{breakfast}', used)} eggs.",
            f"There are {_eq(f'{eggs}-{used}', eggs - used)} eggs left.",
        ]
        return question, lines, eggs - used
    if variant == 1:
        minutes = rng.choice((15, 20, 30, 40, 45, 60, 90))
        # Pick a number of days that makes the total a whole number of hours.
        step = 60 // math.gcd(60, minutes)
        days = step * rng.randint(2, max(2, 30 // step))
        total = minutes * days
        practice = rng.choice(("piano", "soccer", "drawing", "reading", "the violin", "karate", "swimming"))
        question = (f"{p['name']} practices {practice} for {minutes} minutes a day. How many hours does "
                    f"{p['he']} practice in {days} days?")
        lines = [
            f"{p['He']} practices {_eq(f'{minutes}*{days}', total)} minutes.",
            f"That is {_eq(f'{total}/60', total // 60)} hours.",
        ]
        return question, lines, total // 60
    feet, piece = rng.randint(2, 10), rng.choice((2, 3, 4, 6, 12))
    inches = feet * 12
    material = rng.choice(("ribbon", "rope", "piece of yarn", "wire", "strip of paper", "string"))
    question = (f"A {material} is {feet} feet long. {p['name']} cuts it into pieces that are each {piece} "
                f"inches long. How many pieces does {p['he']} get?")
    lines = [
        f"The {material} is {_eq(f'{feet}*12', inches)} inches long.",
        f"{p['He']} gets {_eq(f'{inches}/{piece}', inches // piece)} pieces.",
    ]
    return question, lines, inches // piece


def _shared_cost(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    friends = rng.randint(2, 6)
    food, price_low, price_high = rng.choice((
        ("pizzas", 8, 15), ("sandwiches", 4, 8), ("movie tickets", 6, 12), ("bowls of noodles", 5, 10),
        ("board games", 10, 25), ("cakes", 10, 20),
    ))
    count, price = rng.randint(2, 5), rng.randint(price_low, price_high)
    cost = count * price
    # Choose the extra cost so the total splits evenly.
    extra = rng.randint(2, 20)
    extra += (-(cost + extra)) % friends
    total = cost + extra
    extra_item = rng.choice((
        "a bag of snacks", "drinks", "a delivery fee", "a tip", "popcorn", "decorations", "a card",
    ))
    question = (f"{p['name']} and {_NUMBER_WORDS[friends - 1]} {'friend' if friends == 2 else 'friends'} "
                f"buy {count} {food} for ${price} each and {extra_item} for ${extra}. They split the cost "
                f"equally. How much does each person pay?")
    lines = [
        f"The {food} cost {_eq(f'{count}*{price}', cost, money=True)}.",
        f"The total is {_eq(f'{cost}+{extra}', total, money=True)}.",
        f"Each of the {friends} people pays {_eq(f'{total}/{friends}', total // friends, money=True)}.",
    ]
    return question, lines, total // friends


def _rows(rng: random.Random) -> tuple[str, list[str], int]:
    p = _person(rng)
    variant = rng.randrange(3)
    if variant == 0:
        venue = rng.choice(("theater", "school hall", "stadium section", "church", "cinema", "concert hall"))
        rows, seats = rng.randint(5, 30), rng.randint(6, 25)
        total = rows * seats
        filled = rng.randint(2, total - 2)
        question = (f"{p['name']} visits a {venue} that has {rows} rows of seats with {seats} seats in "
                    f"each row. If {filled} seats are filled, how many seats are empty?")
        lines = [
            f"There are {_eq(f'{rows}*{seats}', total)} seats.",
            f"So {_eq(f'{total}-{filled}', total - filled)} seats are empty.",
        ]
        return question, lines, total - filled
    if variant == 1:
        tree, fruit = rng.choice((("apple", "apples"), ("orange", "oranges"), ("peach", "peaches"),
                                  ("lemon", "lemons"), ("pear", "pears"), ("plum", "plums")))
        rows, per_row, per_box = rng.randint(2, 8), rng.randint(3, 10), rng.choice((5, 10))
        per_tree = per_box * rng.randint(2, 8)
        trees = rows * per_row
        total = trees * per_tree
        question = (f"{p['name']} plants {rows} rows of {tree} trees with {per_row} trees in each row. "
                    f"Each tree grows {per_tree} {fruit}. {p['He']} packs the {fruit} in boxes of "
                    f"{per_box}. How many boxes does {p['he']} fill?")
        lines = [
            f"There are {_eq(f'{rows}*{per_row}', trees)} trees.",
            f"They grow {_eq(f'{trees}*{per_tree}', total)} {fruit}.",
            f"{p['He']} fills {_eq(f'{total}/{per_box}', total // per_box)} boxes.",
        ]
        return question, lines, total // per_box
    levels, rows, spaces = rng.randint(2, 5), rng.randint(3, 10), rng.randint(5, 20)
    per_level = rows * spaces
    total = per_level * levels
    parked = rng.randint(2, total - 2)
    question = (f"{p['name']} parks in a garage with {levels} levels. Each level has {rows} rows with "
                f"{spaces} parking spaces in each row. There are {parked} cars parked. How many spaces "
                f"are still open?")
    lines = [
        f"Each level has {_eq(f'{rows}*{spaces}', per_level)} spaces.",
        f"The garage has {_eq(f'{per_level}*{levels}', total)} spaces.",
        f"There are {_eq(f'{total}-{parked}', total - parked)} open spaces.",
    ]
    return question, lines, total - parked


_MATH_FAMILIES: tuple[tuple[str, _Family], ...] = (
    ("shopping_change", _shopping),
    ("rates", _rates),
    ("ages", _ages),
    ("fractions", _fractions),
    ("percentages", _percentages),
    ("multi_day_sums", _multi_day),
    ("groups_remainders", _groups),
    ("area_perimeter", _area),
    ("savings", _savings),
    ("recipe_scaling", _recipes),
    ("comparisons", _comparisons),
    ("wages", _wages),
    ("averages", _averages),
    ("unit_conversion", _units),
    ("shared_cost", _shared_cost),
    ("rows_and_totals", _rows),
)


def _math_problem(rng: random.Random) -> tuple[str, dict[str, str]]:
    family, make = rng.choice(_MATH_FAMILIES)
    question, lines, answer = make(rng)
    return family, {"question": question, "answer": "\n".join([*lines, f"#### {answer}"])}
