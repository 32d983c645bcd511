"""Models: one interface over every supported Hugging Face vision-language model, loaded by name.

``vlm`` (the interface: blocks, lens, prompts, token spans), ``load`` (names, folders, hub ids), ``layers`` (layer
specs), ``hooks`` (the one hook primitive), ``spans`` (what is pooled over token spans), ``generate`` (greedy
answers), ``clip`` (retrieval and zero-shot scores), ``folder`` / ``processor`` / ``placement`` (loading details).
"""
