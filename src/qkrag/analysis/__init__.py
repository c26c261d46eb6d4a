"""Analyses behind the notebooks: the seeds' cosine reproductions (`cosine`), rankings side by side (`rankings`)."""
