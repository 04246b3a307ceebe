"""The people of the corpus's world and the small English helpers that every generator shares."""

from __future__ import annotations

import random

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
NAMES: frozenset[str] = frozenset(_GIRL_NAMES + _BOY_NAMES)  # every name a person of the world can have

SHE: dict[str, str] = {
    "he": "she", "He": "She", "him": "her", "his": "her", "His": "Her", "himself": "herself",
}
HE: dict[str, str] = {"he": "he", "He": "He", "him": "him", "his": "his", "His": "His", "himself": "himself"}


def person(rng: random.Random, exclude: tuple[str, ...] = ()) -> dict[str, str]:
    """A random name with matching pronouns, under the keys name, he, He, him, his, His, himself."""
    girl = rng.random() < 0.5
    names = _GIRL_NAMES if girl else _BOY_NAMES
    name = rng.choice(names)
    while name in exclude:
        name = rng.choice(names)
    return {"name": name, **(SHE if girl else HE)}


def with_article(phrase: str) -> str:
    """The phrase with its indefinite article; the word lists avoid words like 'unicorn' that break this."""
    return ("an " if phrase[0] in "aeiouAEIOU" else "a ") + phrase


def capitalized(text: str) -> str:
    """The text with its first letter in upper case and the rest untouched ('the park' -> 'The park')."""
    return text[0].upper() + text[1:]


def listed(items: list[str]) -> str:
    """Items as English lists them: 'a', 'a and b', 'a, b, and c'."""
    if len(items) == 1:
        return items[0]
    if len(items) == 2:
        return f"{items[0]} and {items[1]}"
    return ", ".join(items[:-1]) + f", and {items[-1]}"

