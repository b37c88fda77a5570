"""Checkpoints and the embedding engine: dataset + checkpoint -> run folder.

- ``checkpoints``: recognise and load any checkpoint kind into an ``Encoder``.
- ``encoders``: the ``Encoder`` interface, device and precision choice, the never-unpickle rule.
- ``encoders_native`` / ``encoders_hf``: NegScope's own dual encoder and precomputed embeddings; sentence-transformers
  and Hugging Face CLIP / SigLIP (optional packages).
- ``dual_encoder``: the tiny CLIP-style model of the sample.
- ``engine``: batched embedding into a cached run folder (``embed_to_run``).
"""
