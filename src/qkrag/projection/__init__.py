"""The train stage: the query/key projection (`model`), its training (`train`) and export to sentence-transformers
(`export`)."""
