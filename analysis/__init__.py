"""NegScope analysis layer: every computation of the app and the CLI (never imports streamlit)."""

from analysis.search.blas import choose_openblas_coretype

# Before any module loads faiss (its OpenBLAS reads OPENBLAS_CORETYPE once, at load): fast kernels from the
# CPU's own flags where OpenBLAS would not recognise the CPU; a value already set is kept.
choose_openblas_coretype()

__version__ = "0.1.0"
