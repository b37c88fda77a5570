"""2-D maps of a run's embeddings (PCA, UMAP over a faiss kNN graph) and the item look-ups of the map page."""
