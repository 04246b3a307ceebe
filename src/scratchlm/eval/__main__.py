"""`python -m scratchlm.eval ARGS`: lm-evaluation-harness's command line with the model "scratchlm" registered
(scratchlm.eval.harness), e.g. --model scratchlm --model_args run=RUN_DIR --tasks gsm8k."""

from scratchlm.eval.harness import main

main()
