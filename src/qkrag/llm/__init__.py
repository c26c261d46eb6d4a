"""The LLM stage: one OpenAI-compatible client (`client`), the embedded local model (`local`), prompt templates
(`prompts`) and LLM text transforms (`rewrite`)."""
