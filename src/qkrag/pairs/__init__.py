"""The generate stage: LLM-written (query, passage, negatives) pairs from a corpus (`generate`), and teacher scores
for distillation (`teacher`)."""
