"""Does a fine-tuned run answer like an assistant? What `scratchlm chat RUN --prompt Q --temperature 0` replies to
held-out questions it never trained on: the same chat-format prompt and greedy decoding, run as one batch
of the engine (whose greedy tokens equal those of a sequence alone: tests/infer/test_engine.py).

    math     held-out embedded math questions: does the reply end its turn on its own, and does it carry a
             parseable final `#### <number>` line (and is that number right)?
    stories  held-out story requests: does the requested character's name appear in the story, and the
             requested place (its words after the preposition, in any case: "a big green forest")?

    .venv/bin/python scripts/check_sft.py runs/tiny-sft [--math 200] [--stories 100]
"""

from __future__ import annotations

import argparse
import json
import re

from scratchlm.chat import load_chat_format
from scratchlm.data import corpus
from scratchlm.infer.engine import Engine
from scratchlm.infer.sampling import SamplingParams
from scratchlm.run import load_run

FINAL = re.compile(r"^#### (-?[\d,]*\.?\d+)\s*$", re.MULTILINE)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--math", type=int, default=200)
    parser.add_argument("--stories", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=300)
    parser.add_argument("--examples", type=int, default=2, help="replies to print in full")
    args = parser.parse_args()
    _, tokenizer, model = load_run(args.run_dir)
    fmt = load_chat_format(args.run_dir, tokenizer)
    engine = Engine(model, fmt.stop_ids, tokenizer, max_running=32)
    problems = list(corpus.math_problems("heldout", args.math))
    requests = list(corpus.story_requests("heldout", args.stories))
    questions = [p["question"] for p in problems] + [r.request for r in requests]
    prompts = [fmt.prompt_ids([{"role": "user", "content": q}]) for q in questions]
    params = SamplingParams(max_new_tokens=args.max_new_tokens, temperature=0, skip_special_tokens=True)
    done = engine.generate(prompts, params)
    math, stories = done[:len(problems)], done[len(problems):]
    ended = sum(c.finish_reason == "stop" for c in math)
    finals = [FINAL.findall(c.text) for c in math]
    parsed = sum(bool(f) for f in finals)
    correct = sum(bool(f) and f[-1].replace(",", "") == p["answer"].split("#### ")[-1].strip()
                  for f, p in zip(finals, problems, strict=True))
    named = sum(r.name in c.text for r, c in zip(requests, stories, strict=True))
    placed = sum(r.story.place.split(" ", 1)[1].lower() in c.text.lower()
                 for r, c in zip(requests, stories, strict=True))
    for question, completion in list(zip(questions, done, strict=True))[::max(1, len(done) // max(args.examples, 1))][
            :args.examples]:
        print(f"--- you: {question}\n--- model: {completion.text}\n")
    print(json.dumps({"run": args.run_dir, "math_questions": len(math),
                      "ends_turn": round(ended / max(len(math), 1), 4),
                      "parseable_final_line": round(parsed / max(len(math), 1), 4),
                      "final_answer_correct": round(correct / max(len(math), 1), 4),
                      "story_requests": len(stories), "names_the_character": round(named / max(len(stories), 1), 4),
                      "names_the_place": round(placed / max(len(stories), 1), 4),
                      "stories_end_turn": round(sum(c.finish_reason == "stop" for c in stories) / max(len(stories), 1),
                                                4)}))


if __name__ == "__main__":
    main()
