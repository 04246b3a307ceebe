"""Children's stories: a beginning, a problem and a resolution over several paragraphs.

They teach a small model fluent, simple English. A story is assembled from one of the plots in
``plots.py`` and the shared pools below (who the hero is, where they live, how the story opens and
closes), and it keeps the facts that a request for it can name: the hero, the place and the event.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import NamedTuple

from scratchlm.data.corpus.plots import PLOTS
from scratchlm.data.corpus.splits import seeded_rng, split_stream
from scratchlm.data.corpus.world import HE, SHE, capitalized, person, with_article

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


class Story(NamedTuple):
    """A story and the facts about it that a request or a follow-up question can name."""

    text: str
    name: str  # the hero
    character: str  # how the story introduces the hero: "a shy fox"
    place: str  # where the hero lives, with its preposition: "in a big green forest"
    event: str  # what happens, as a clause: "she lost her red ball"
    friend: str  # the friend's name


def story_stream(split: str, seed: int) -> Iterator[Story]:
    rng = seeded_rng("stories", split, seed)
    return split_stream(lambda: _story(rng), lambda story: story.text, split)


def _character(rng: random.Random, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """A story character: a person with a name, and the phrase that introduces them ('a shy fox')."""
    character = person(rng, exclude)
    if rng.random() < 0.4:
        kind = "girl" if character["he"] == "she" else "boy"
    else:
        kind = rng.choice(_ANIMALS)
    character["intro"] = with_article(f"{rng.choice(_HERO_ADJECTIVES)} {kind}")
    return character


def _story_vars(rng: random.Random) -> dict[str, str]:
    """The template variables shared by all plots.

    The hero's keys are bare (name, he, His, ...); the friend's start with f and the helper's with h.
    A capitalized key (He, Helper, Outing) is the form that starts a sentence.
    """
    hero = _character(rng)
    friend = _character(rng, exclude=(hero["name"],))
    helper, helper_he = rng.choice(_HELPERS)
    helper_pronouns = SHE if helper_he == "she" else HE
    activity, activity2 = rng.sample(_ACTIVITIES, 2)
    bad, bad2 = rng.sample(_BAD_FEELINGS, 2)
    good, good2 = rng.sample(_GOOD_FEELINGS, 2)
    trait, trait2 = rng.sample(_TRAITS, 2)
    place = rng.choice(_PLACES)
    outing = rng.choice(_OUTINGS)
    return {
        **{key: value for key, value in hero.items() if key != "intro"},
        "hero_a": hero["intro"],
        "hero_A": capitalized(hero["intro"]),
        "fname": friend["name"],
        "fhe": friend["he"],
        "fHe": friend["He"],
        "fhim": friend["him"],
        "fhis": friend["his"],
        "friend_a": friend["intro"],
        "helper": helper,
        "Helper": capitalized(helper),
        "hhe": helper_pronouns["he"],
        "hHe": helper_pronouns["He"],
        "hhim": helper_pronouns["him"],
        "place": place,
        "Place": capitalized(place),
        "family": rng.choice(_FAMILIES_AT_HOME),
        "activity": activity,
        "activity2": activity2,
        "trait": trait,
        "trait2": trait2,
        "Time": capitalized(rng.choice(_TIMES)),
        "outing": outing,
        "Outing": capitalized(outing),
        "bad": bad,
        "bad2": bad2,
        "good": good,
        "good2": good2,
        "a_bad": with_article(bad),
        "a_good2": with_article(good2),
    }


def _story(rng: random.Random) -> Story:
    """One story of 80 to 250 words: an introduction, a problem, help, and a resolution."""
    v = _story_vars(rng)
    plot = rng.choice(PLOTS)
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
    text = "\n\n".join(" ".join(fill(sentence) for sentence in paragraph) for paragraph in paragraphs)
    return Story(text, v["name"], v["hero_a"], v["place"], fill(plot.event), v["fname"])

