"""Grade-school math word problems whose answers follow GSM8K's format exactly.

One step per line, each with one calculator annotation ``<<expression=result>>``, and a final
``#### <number>`` line, so that a model trained here can be evaluated and fine-tuned with GSM8K tooling
unchanged. Sixteen families (shopping, rates, ages, fractions, ...) each write a question and its steps.
"""

from __future__ import annotations

import math
import random
import re
from collections.abc import Callable, Iterator

from scratchlm.data.corpus.splits import seeded_rng, split_stream
from scratchlm.data.corpus.world import capitalized, listed, person

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
    p = person(rng)
    picks = rng.sample(_SHOP_ITEMS, rng.choice((1, 2, 2, 3)))
    buys = [(rng.randint(2, 8), rng.randint(low, high), item) for item, low, high in picks]
    each = rng.choice(("{q} {item} for ${price} each", "{q} {item} at ${price} apiece",
                       "{q} {item} that cost ${price} each"))
    listing = listed([each.format(q=q, item=item, price=price) for q, price, item in buys])
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
    p = person(rng)
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
    a = person(rng)
    b = person(rng, exclude=(a["name"],))
    variant = rng.randrange(3)
    later = rng.randint(2, 10)
    if variant == 0:
        c = person(rng, exclude=(a["name"], b["name"]))
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
    question = (f"{a['name']}'s {parent} is {parent_age} years old. {capitalized(parent_he)} was {born_at} years "
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
    p = person(rng)
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
        friend = person(rng, exclude=(p["name"],))["name"]
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
            f"{capitalized(_eq(_fraction_expression(total, num, den), used))} {things} {gone}.",
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
    question = (f"{p['name']} counts {total} {people} {event}. {capitalized(frac)} of them are {group}. How many "
                f"of the {people} are not {group}?")
    lines = [
        f"{capitalized(_eq(_fraction_expression(total, num, den), part))} {people} are {group}.",
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
    p = person(rng)
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
        f"{capitalized(_eq(f'{total}*{pct}/100', part))} of them {verb}.",
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
    p = person(rng)
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
    p = person(rng)
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
            f"{capitalized(_NUMBER_WORDS[full])} full {vehicles} hold {_eq(f'{full}*{size}', carried)} {people}.",
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
    p = person(rng)
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
    p = person(rng)
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
    p = person(rng)
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
        f"{capitalized(_eq(f'{wanted}/{batch}', scale))} batches are needed.",
        f"{p['He']} needs {_eq(f'{amount}*{scale}', amount * scale)} {ingredient}.",
    ]
    return question, lines, amount * scale


def _comparisons(rng: random.Random) -> tuple[str, list[str], int]:
    a = person(rng)
    b = person(rng, exclude=(a["name"],))
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
    c = person(rng, exclude=(a["name"], b["name"]))
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
    p = person(rng)
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
    p = person(rng)
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
        question = (f"{p['name']} {verb} {listed(list(map(str, values)))} {things} on {p['his']} first "
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
    question = (f"{p['name']} {verb} {listed(list(map(str, values)))} {things} on {_NUMBER_WORDS[count]} "
                f"{occasion}s. What is the average number of {things} per {occasion}?")
    lines = [
        f"The total is {_eq('+'.join(map(str, values)), total)} {things}.",
        f"The average is {_eq(f'{total}/{count}', mean)} {things} per {occasion}.",
    ]
    return question, lines, mean


def _units(rng: random.Random) -> tuple[str, list[str], int]:
    p = person(rng)
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
    p = person(rng)
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
    p = person(rng)
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


FAMILIES: tuple[tuple[str, _Family], ...] = (
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
    family, make = rng.choice(FAMILIES)
    question, lines, answer = make(rng)
    return family, {"question": question, "answer": "\n".join([*lines, f"#### {answer}"])}


def problem_stream(split: str, seed: int) -> Iterator[tuple[str, dict[str, str]]]:
    """Yields (family name, problem); the family is kept apart so the public records stay GSM8K-shaped.

    A problem belongs to the split of its question, so one question never appears in two splits.
    """
    rng = seeded_rng("math", split, seed)
    return split_stream(lambda: _math_problem(rng), lambda tagged: tagged[1]["question"], split)
