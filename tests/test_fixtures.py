from sentence_transformers import SentenceTransformer


def test_tiny_model_loads_and_encodes(tiny_model_path):
    model = SentenceTransformer(str(tiny_model_path), device="cpu")
    emb = model.encode(["the cat", "a dog runs in the river"])
    assert emb.shape == (2, 32)


def test_keyword_encoder(keyword_encoder):
    enc = keyword_encoder(["cat", "dog"])
    v = enc(["cat cat", "dog"])
    assert v[0, 0] > 0.99 and v[1, 1] > 0.99
