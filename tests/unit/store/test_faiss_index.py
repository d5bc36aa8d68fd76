"""FAISS-specific behaviour beside the contract suite (tests/contract/test_vector_index.py)."""

from __future__ import annotations

import faiss
import pytest

from store.faiss_index import FaissVectorIndex
from store.vector_index import VectorIndexError

DIM = 16


def test_asking_for_a_gpu_without_one_is_refused() -> None:
    if faiss.get_num_gpus() > 0:
        pytest.skip("this machine has a GPU")
    with pytest.raises(VectorIndexError, match="no GPU"):
        FaissVectorIndex(DIM, gpu=True)
    assert not FaissVectorIndex(DIM).gpu
