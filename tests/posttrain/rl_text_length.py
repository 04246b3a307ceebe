"""`scratchlm` with one more verifiable reward, for the RL tests: text_length, the completion's characters / 40.

An untrained model's samples almost never hold a right gsm8k answer, so every group's rewards would be equal
and every advantage 0; the length of the text differs from sample to sample, so every group has a signal.

    python rl_text_length.py rl RUN --out OUT --reward text_length ...        (or under torchrun)
"""

from __future__ import annotations

import sys

from scratchlm.cli import main
from scratchlm.posttrain.rewards import REWARDS

REWARDS["text_length"] = lambda text, problem, rl: (len(text) / 40, problem["answer"].split()[-1] in text)

if __name__ == "__main__":
    main(sys.argv[1:])
