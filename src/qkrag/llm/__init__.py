"""The LLM stage: one OpenAI-compatible client (`client`), the embedded local model (`local`), prompt templates
(`prompts`), LLM text transforms (`rewrite`) and the relevance judge (`judge`)."""
