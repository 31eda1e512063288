"""Training: one small loop with hooks (schedule, checkpoints, evaluation, logging), exact resume."""
