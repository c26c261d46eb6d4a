"""`qkrag serve`: a local web page that puts raw cosine, a projection, hybrid fusion and BM25 side by side.

`workspace` computes what the page shows with the library (nothing is re-implemented, nothing is written to an
index); `app` serves it with Starlette on 127.0.0.1; `static/` holds the page (plain HTML and JS, no build step).
Needs the `serve` extra (starlette, uvicorn).
"""

from qkrag.serve.app import Served, make_app, open_served, serve

__all__ = ["Served", "make_app", "open_served", "serve"]
