"""Adapters of Haldir's governed call (`haldir.governed`) to agent frameworks, one module each; each
imports its framework, an optional extra (`pip install 'haldir-client[langchain]'`), only when imported."""

__all__: list[str] = []
