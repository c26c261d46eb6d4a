"""qkrag: retrieval beyond raw cosine. Learn what relevance means for your corpus (see README.md).

Importing the package is cheap (no torch): the stages are modules imported when used.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("qkrag")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"

from qkrag.integrations.registration import install as _register_with_chroma  # noqa: E402

_register_with_chroma()  # cheap: a post-import hook, see qkrag/integrations/registration.py
