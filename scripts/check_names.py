"""Does a base model keep a story's names? Each of the first held-out stories is cut after its first
paragraph (which introduces the hero, and often the friend) and continued greedily; a continuation counts
when every name of the corpus's world it writes is the hero's or the friend's, and it writes at least one.
A model that has not learnt to copy from its context renames the hero as it goes.

    .venv/bin/python scripts/check_names.py runs/tiny [--stories 60] [--max-new-tokens 120]
"""

from __future__ import annotations

import argparse
import itertools
import json
import re

from scratchlm.data.corpus.stories import story_stream
from scratchlm.data.corpus.world import NAMES
from scratchlm.infer.engine import Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.run import load_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--stories", type=int, default=60)
    parser.add_argument("--max-new-tokens", type=int, default=120)
    args = parser.parse_args()
    _, tokenizer, model = load_run(args.run_dir)
    engine = Engine(model, tokenizer.eos_ids, tokenizer, max_running=32)
    stories = list(itertools.islice(story_stream("heldout", 0), args.stories))
    prompts = [tokenizer.encode(story.text.split("\n\n")[0] + "\n\n") for story in stories]
    done = engine.generate(prompts, SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0))
    kept = 0
    for story, completion in zip(stories, done, strict=True):
        named = {word for word in re.findall(r"[A-Z][a-z]+", completion.text) if word in NAMES}
        kept += bool(named) and named <= {story.name, story.friend}
    print(json.dumps({"run": args.run_dir, "stories": len(stories),
                      "keeps_the_names": round(kept / max(len(stories), 1), 4)}))


if __name__ == "__main__":
    main()
