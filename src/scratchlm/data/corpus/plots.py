"""The ten story plots: what goes wrong, how the hero reacts, how help arrives, and what is learned.

Each plot is a set of text pools with ``{placeholders}``; ``stories.py`` picks one of each and fills them
from the story's variables. A plot also states its event as one clause ("{he} lost {his} {obj}"), so a
request for a story can name what happens and the answer can be checked against it.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from typing import NamedTuple

from scratchlm.data.corpus.world import with_article

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


class Plot(NamedTuple):
    """One kind of story problem: the text pools for each part of the arc.

    ``setup`` adds the plot's own words to the story's variables. Help and resolution come in pairs so
    that the way a problem gets solved matches how help arrived.
    """

    setup: Callable[[random.Random, dict[str, str]], None]
    event: str  # what happens to the hero, as a clause: "{he} lost {his} {obj}"
    problems: tuple[str, ...]
    reactions: tuple[str, ...]
    solutions: tuple[tuple[str, str], ...]
    afters: tuple[str, ...]
    lessons: tuple[str, ...]


def _setup_lost(rng: random.Random, v: dict[str, str]) -> None:
    v["toy"] = rng.choice(_TOYS)
    v["color"] = rng.choice(_COLORS)
    v["obj"] = f"{v['color']} {v['toy']}"
    v["obj_a"] = with_article(v["obj"])
    v["box"] = rng.choice(("toy box", "room", "bag", "basket", "cupboard", "drawer"))
    v["search1"], v["search2"] = rng.sample(_SEARCH_SPOTS, 2)
    v["found_spot"] = rng.choice(_FOUND_SPOTS)


_LOST = Plot(
    _setup_lost,
    "{he} lost {his} {obj}",
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


_STUCK = Plot(
    _setup_stuck,
    "{his} {obj} got stuck {high}",
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

# Each fear brings what happens, its own scene and its own ways of being overcome; {placeholders} are filled later.
_FEARS: tuple[tuple[str, str, str, tuple[tuple[str, str], ...]], ...] = (
    (
        "{he} was afraid of the dark",
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
        "a thunderstorm scared {him}",
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
        "{he} was afraid of the deep water at the {water}",
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
        "{he} was afraid of the tall slide at {outing}",
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
        "a big dog scared {him}",
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
    event, problem, reaction, solutions = rng.choice(_FEARS)
    help_text, resolution = rng.choice(solutions)
    # The fear's texts have placeholders of their own, so they are filled in a second pass by _story.
    v["fear_event"], v["fear_problem"], v["fear_reaction"] = event, problem, reaction
    v["fear_help"], v["fear_resolution"] = help_text, resolution


_FEAR = Plot(
    _setup_fear,
    "{fear_event}",
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
    v["obj_a"] = with_article(f"{rng.choice(_COLORS)} {v['toy']}")
    v["count_to"] = rng.choice(("twenty", "fifty", "one hundred", "ten"))


_SHARE = Plot(
    _setup_share,
    "{he} and {fname} both wanted the same {toy}",
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


_BROKEN = Plot(
    _setup_broken,
    "{he} built a {build} at {build_place} and it was ruined",
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


_LOST_WAY = Plot(
    _setup_lost_way,
    "{he} got lost far from home",
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


_RAIN = Plot(
    _setup_rain,
    "rain spoiled {his} picnic with {fname}",
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


_LEARN = Plot(
    _setup_learn,
    "{he} learned to {skill}",
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


_KIND = Plot(
    _setup_kind,
    "{he} found {creature}",
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


_GIFT = Plot(
    _setup_gift,
    "{he} made a present for {fname}'s birthday",
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

PLOTS: tuple[Plot, ...] = (_LOST, _STUCK, _FEAR, _SHARE, _BROKEN, _LOST_WAY, _RAIN, _LEARN, _KIND, _GIFT)
