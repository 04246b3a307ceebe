"""Evaluation: tasks (data + prompt format), a runner (generation, log-likelihoods) and a scorer (pure
functions that score as lm-evaluation-harness does).

    evaluate.py         `scratchlm eval`: run tasks, write RUN_DIR/eval/<task>.json and per-sample jsonl
    gsm8k.py            generative math, strict-match and flexible-extract
    multiple_choice.py  log-likelihood choice: story_questions (embedded), arc, hellaswag, mmlu
    bpb.py              bits per byte and perplexity of text
    runner.py           the model's two services: generate, loglikelihoods
    scorer.py           the scores and their standard errors
    harness.py          the lm-evaluation-harness model adapter ("scratchlm")
"""
