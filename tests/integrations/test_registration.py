"""`import qkrag` registers qkrag's Chroma embedding function, before or after chromadb, without loading torch or
chromadb itself."""

from __future__ import annotations

import json

from tests.integrations.test_chroma import python


def test_import_qkrag_registers_without_torch_or_chromadb():
    out = python("import json, sys, qkrag; print(json.dumps(['torch' in sys.modules, 'chromadb' in sys.modules]))")
    assert json.loads(out) == [False, False]
    out = python("import qkrag, chromadb\nfrom chromadb.utils.embedding_functions import known_embedding_functions as k"
                 "\nprint('qkrag' in k, 'qkrag_projection' in k)")
    assert out.split() == ["True", "True"]
    out = python("import chromadb, qkrag.projection.export\n"  # the stumble: registered only when imported by name
                 "from chromadb.utils.embedding_functions import known_embedding_functions as k\nprint('qkrag' in k)")
    assert out.strip() == "True"


def test_a_failing_registration_never_breaks_import_chromadb():
    out = python("import qkrag.integrations.chroma as c\n"
                 "c.embedding_function_class = lambda: (_ for _ in ()).throw(RuntimeError('boom'))\n"
                 "import warnings\nwarnings.simplefilter('ignore')\nimport chromadb\nprint('imported')")
    assert out.strip() == "imported"
