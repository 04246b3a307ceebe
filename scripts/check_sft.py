"""Does a fine-tuned run answer like an assistant? What `scratchlm chat RUN --prompt Q --temperature 0` replies to
held-out questions it never trained on, asked in one process through the same session code:

    math     held-out embedded math questions: does the reply end its turn on its own, and does it carry a
             parseable final `#### <number>` line (and is that number right)?
    stories  held-out story requests: does the requested character's name appear in the story?

    .venv/bin/python scripts/check_sft.py runs/tiny-sft [--math 200] [--stories 100]
"""

from __future__ import annotations

import argparse
import json
import re

from scratchlm.data import corpus
from scratchlm.infer.engine import SamplingParams
from scratchlm.infer.terminal_chat import ChatSession

FINAL = re.compile(r"^#### (-?[\d,]*\.?\d+)\s*$", re.MULTILINE)


def ask(session: ChatSession, question: str, max_new_tokens: int) -> tuple[str, bool]:
    """The greedy reply to one message in a fresh conversation, and whether it ended its turn itself."""
    session.conversation.turns.clear()
    params = SamplingParams(max_new_tokens=max_new_tokens, temperature=0)
    pieces = list(session.reply(question, params))
    generated = len(session.fmt.tokenizer.encode("".join(pieces)))
    return "".join(pieces), generated < max_new_tokens


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("run_dir")
    parser.add_argument("--math", type=int, default=200)
    parser.add_argument("--stories", type=int, default=100)
    parser.add_argument("--max-new-tokens", type=int, default=400)
    args = parser.parse_args()
    session = ChatSession(args.run_dir, warn=lambda _text: None)
    ended = parsed = correct = 0
    for problem in corpus.math_problems("heldout", args.math):
        reply, done = ask(session, problem["question"], args.max_new_tokens)
        finals = FINAL.findall(reply)
        ended += done
        parsed += bool(finals)
        correct += bool(finals) and finals[-1].replace(",", "") == problem["answer"].split("#### ")[-1].strip()
    named = 0
    for request in corpus.story_requests("heldout", args.stories):
        reply, _ = ask(session, request.request, args.max_new_tokens)
        named += request.name in reply
    print(json.dumps({"run": args.run_dir, "math_questions": args.math,
                      "ends_turn": round(ended / max(args.math, 1), 4),
                      "parseable_final_line": round(parsed / max(args.math, 1), 4),
                      "final_answer_correct": round(correct / max(args.math, 1), 4),
                      "story_requests": args.stories, "names_the_character": round(named / max(args.stories, 1), 4)}))


if __name__ == "__main__":
    main()
