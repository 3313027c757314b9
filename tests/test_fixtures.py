import numpy as np
from sentence_transformers import SentenceTransformer


def test_tiny_model_loads_and_encodes(tiny_model_path):
    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    emb = model.encode(["the cat", "a dog runs in the river"])
    assert emb.shape == (2, 32)


def test_keyword_encoder_is_a_normalised_bag_of_keywords(keyword_encoder):
    v = keyword_encoder(["cat", "dog"])(["cat cat", "Dog"])
    # counts per keyword, then 1e-3 in a last column (no zero rows), then L2 normalisation
    want = np.array([[2, 0, 1e-3], [0, 1, 1e-3]]) / np.sqrt([[4 + 1e-6], [1 + 1e-6]])
    np.testing.assert_allclose(v, want, rtol=1e-6)
