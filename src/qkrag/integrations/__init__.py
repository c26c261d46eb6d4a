"""qkrag inside other tools: Chroma (chroma.py, registered on `import qkrag`), LangChain (langchain.py, the
`[langchain]` extra) and LlamaIndex (llamaindex.py, the `[llamaindex]` extra). See docs/integrations.md."""
