"""The Qwen3-Reranker family (0.6B, 4B, 8B): a decoder-only LLM that scores a pair by its
``yes``/``no`` logits at the end of a fixed prompt.

Registered with the other families by :mod:`rerank.converters.families.qwen3`, through which the
shared pipeline reaches it. Modules: :mod:`.spec` (facts, weight names and their check),
:mod:`.prompt` (the model card's prompt and the model folder's template), :mod:`.checkpoint`
and :mod:`.gguf` (the readers; the GGUF's Qwen2 BPE tokenizer), :mod:`.graph`,
:mod:`.reference` (the model card's scores and token ids) and :mod:`.catalog`.
"""
