"""The index stage: Chroma and exact indexes (`index`), retrievers (`base`, `baselines`) and hybrid fusion
(`hybrid`)."""
