"""The embed stage: encoders (`encoders`), LLM-wrapped encoders, and the encoder fine-tune baseline (`finetune`)."""
