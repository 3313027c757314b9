"""Loss values AND gradients against hand-written loops; masking semantics; CoSENT; SimCSE."""

from __future__ import annotations

import math

import pytest
import torch
from numeric import finite_differences

from textcl.losses import (
    KnownPositives,
    angle,
    angle_similarity,
    cosent,
    false_negative_mask,
    info_nce,
    normalize_text,
    query_side_mask,
    simcse,
    similarity_anchor,
)

T = 0.07


def _loop_nce(q, c, labels, temperature, mask=None):
    """-log softmax row by row with python loops; mask[i][j] True skips candidate j for row i."""
    total = 0.0
    for i in range(q.shape[0]):
        logits = []
        for j in range(c.shape[0]):
            if mask is not None and mask[i][j] and j != labels[i]:
                continue
            logits.append((sum(q[i, k] * c[j, k] for k in range(q.shape[1])) / temperature, j))
        m = max(v for v, _ in logits)
        log_z = m + torch.log(sum(torch.exp(v - m) for v, _ in logits))
        pos = next(v for v, j in logits if j == labels[i])
        total = total + (log_z - pos)
    return total / q.shape[0]


def _leaves(*shapes, seed=0):
    g = torch.Generator().manual_seed(seed)
    return [torch.nn.functional.normalize(torch.randn(*s, generator=g, dtype=torch.float64), dim=-1)
            .requires_grad_(True) for s in shapes]


def _grads(fn, *xs):
    for x in xs:
        x.grad = None
    value = fn()
    value.backward()
    return value.detach(), [x.grad.clone() for x in xs]


@pytest.mark.parametrize("group_size", [1, 3])
def test_info_nce_matches_loop(group_size):
    b, d = 4, 6
    q, c = _leaves((b, d), (b * group_size, d))
    labels = [i * group_size for i in range(b)]
    v1, g1 = _grads(lambda: info_nce(q, c, temperature=T, group_size=group_size), q, c)
    v2, g2 = _grads(lambda: _loop_nce(q, c, labels, T), q, c)
    assert torch.allclose(v1.double(), v2, atol=1e-5)
    for a, e in zip(g1, g2):
        assert torch.allclose(a.double(), e, atol=1e-5)


def test_info_nce_label_offset_matches_loop():
    """Candidates of 3 'ranks' concatenated; this rank's queries point into the middle block."""
    b, g, d = 2, 2, 5
    q, c = _leaves((b, d), (3 * b * g, d), seed=1)
    offset = b * g
    labels = [offset + i * g for i in range(b)]
    v1, g1 = _grads(lambda: info_nce(q, c, temperature=T, group_size=g, label_offset=offset), q, c)
    v2, g2 = _grads(lambda: _loop_nce(q, c, labels, T), q, c)
    assert torch.allclose(v1.double(), v2, atol=1e-5)
    for a, e in zip(g1, g2):
        assert torch.allclose(a.double(), e, atol=1e-5)


def test_mask_excludes_exactly_the_masked_logits_and_never_the_positive():
    b, g, d = 3, 2, 5
    q, c = _leaves((b, d), (b * g, d), seed=2)
    mask = torch.zeros(b, b * g, dtype=torch.bool)
    mask[0, 2] = mask[0, 5] = mask[2, 0] = True
    mask[1, 2] = True  # row 1's own positive: must be ignored
    labels = [i * g for i in range(b)]
    v1, g1 = _grads(lambda: info_nce(q, c, temperature=T, group_size=g, mask=mask), q, c)
    v2, g2 = _grads(lambda: _loop_nce(q, c, labels, T, mask.tolist()), q, c)
    assert torch.allclose(v1.double(), v2, atol=1e-5)
    for a, e in zip(g1, g2):
        assert torch.allclose(a.double(), e, atol=1e-5)
    # masking changes the loss (only through the masked entries) ...
    v0 = info_nce(q, c, temperature=T, group_size=g)
    assert abs(v0.item() - v1.item()) > 1e-6
    # ... and a masked candidate gets no gradient from the rows that mask it: c[5] is seen only by row 0
    # (masked there) and rows 1, 2 (not masked), so moving it changes the loss through rows 1, 2 alone.
    with torch.no_grad():
        c2 = c.detach().clone()
        c2[5] += 0.5
    per_row = [info_nce(q[i:i + 1], c2, temperature=T, group_size=g, label_offset=i * g,
                        mask=mask[i:i + 1]) for i in range(b)]
    per_row_old = [info_nce(q[i:i + 1], c.detach(), temperature=T, group_size=g, label_offset=i * g,
                            mask=mask[i:i + 1]) for i in range(b)]
    assert torch.allclose(per_row[0], per_row_old[0])
    assert not torch.allclose(per_row[1], per_row_old[1])


def _loop_symmetric(q, c, g, temperature):
    b = q.shape[0]
    p = torch.stack([c[i * g] for i in range(b)])
    forward = _loop_nce(q, c, [i * g for i in range(b)], temperature)
    backward = _loop_nce(p, q, list(range(b)), temperature)
    return (forward + backward) / 2


def test_symmetric_matches_loop():
    b, g, d = 4, 2, 5
    q, c = _leaves((b, d), (b * g, d), seed=3)
    v1, g1 = _grads(lambda: info_nce(q, c, temperature=T, group_size=g, symmetric=True), q, c)
    v2, g2 = _grads(lambda: _loop_symmetric(q, c, g, T), q, c)
    assert torch.allclose(v1.double(), v2, atol=1e-5)
    for a, e in zip(g1, g2):
        assert torch.allclose(a.double(), e, atol=1e-5)


def test_symmetric_query_mask_matches_loop():
    b, g, d = 3, 1, 4
    q, c = _leaves((b, d), (b * g, d), seed=4)
    qmask = torch.tensor([[False, True, False], [False, False, False], [True, False, True]])
    v1 = info_nce(q, c, temperature=T, group_size=g, symmetric=True, query_mask=qmask)
    forward = _loop_nce(q, c, [0, 1, 2], T)
    backward = _loop_nce(c, q, [0, 1, 2], T, qmask.tolist())
    assert torch.allclose(v1.double(), (forward + backward) / 2, atol=1e-5)


def test_simcse_is_info_nce_with_group_size_one():
    a, b = _leaves((5, 4), (5, 4), seed=5)
    assert torch.allclose(simcse(a, b, temperature=T), info_nce(a, b, temperature=T, group_size=1))
    v = simcse(a, b, temperature=T)
    assert torch.allclose(v.double(), _loop_nce(a, b, list(range(5)), T), atol=1e-6)


def _loop_cosent(e1, e2, scores, temperature):
    cos = [torch.dot(e1[k], e2[k]) / (e1[k].norm() * e2[k].norm()) / temperature for k in range(len(scores))]
    terms = [torch.zeros((), dtype=e1.dtype)]
    for i in range(len(scores)):
        for j in range(len(scores)):
            if scores[i] > scores[j]:
                terms.append(cos[j] - cos[i])
    return torch.log(sum(torch.exp(t) for t in terms))


def test_cosent_matches_loop():
    e1, e2 = _leaves((6, 5), (6, 5), seed=6)
    scores = torch.tensor([0.0, 2.5, 5.0, 2.5, 1.0, 4.0])
    v1, g1 = _grads(lambda: cosent(e1, e2, scores, temperature=0.05), e1, e2)
    v2, g2 = _grads(lambda: _loop_cosent(e1, e2, scores.tolist(), 0.05), e1, e2)
    assert torch.allclose(v1.double(), v2, atol=1e-5)
    for a, e in zip(g1, g2):
        assert torch.allclose(a.double(), e, atol=1e-5)


def test_cosent_all_equal_scores_is_log_one():
    e1, e2 = _leaves((3, 4), (3, 4), seed=7)
    assert cosent(e1, e2, torch.ones(3)).item() == pytest.approx(0.0)
    # perfectly ordered cosines with a huge margin: loss -> 0; reversed order: loss grows
    x = torch.eye(3)
    y = torch.stack([torch.tensor([1.0, 0, 0]), torch.tensor([1.0, 1, 0]), torch.tensor([1.0, 0, 1])])
    good = cosent(x, y, torch.tensor([5.0, 2.0, 2.0]))
    bad = cosent(x, y, torch.tensor([0.0, 2.0, 2.0]))
    assert good.item() < 1e-2 < math.log(2) < bad.item()


def _loop_angle_sim(x, y):
    """AnglE's score with complex numbers: z, w from the halves; |sum(Re + Im of z_k conj(w_k))|
    divided by |z| |w| (AnglE divides by the norm of the whole vector w, not coordinate-wise)."""
    h = x.shape[0] // 2
    z = torch.complex(x[:h].double(), x[h:].double())
    w = torch.complex(y[:h].double(), y[h:].double())
    q = z * w.conj()
    return (q.real.sum() + q.imag.sum()).abs() / (z.abs().pow(2).sum().sqrt() * w.abs().pow(2).sum().sqrt())


def test_angle_similarity_matches_complex_loop():
    e1, e2 = _leaves((5, 6), (5, 6), seed=8)
    want = torch.stack([_loop_angle_sim(e1[k], e2[k]) for k in range(5)])
    assert torch.allclose(angle_similarity(e1, e2).double(), want, atol=1e-5)
    assert torch.allclose(angle_similarity(e1, e1), torch.ones(5), atol=1e-5)  # same vector: 1


def test_angle_is_cosent_ranking_over_angle_scores():
    e1, e2 = _leaves((6, 4), (6, 4), seed=9)
    scores = torch.tensor([0.0, 2.5, 5.0, 2.5, 1.0, 4.0])
    sim = angle_similarity(e1, e2) / 0.05
    want = torch.log(1 + sum(torch.exp(sim[j] - sim[i]) for i in range(6) for j in range(6)
                             if scores[i] > scores[j]))
    v, grads = _grads(lambda: angle(e1, e2, scores, temperature=0.05), e1, e2)
    assert v.item() == pytest.approx(want.item(), rel=1e-5)
    assert all(torch.isfinite(g).all() and g.abs().sum() > 0 for g in grads)


def test_false_negative_mask_rules():
    # 2 queries, group_size 2: rows 0,1 belong to q0 (positive, negative), rows 2,3 to q1
    queries = ["what is a cat", "dogs"]
    cands = ["A  CAT is an animal", "What is a cat", "dogs are loyal", "a cat is an animal"]
    ids = ["d1", None, "d7", "d9"]
    known = [KnownPositives(ids=frozenset({"d1", "d7"}), texts=frozenset({normalize_text(cands[0])})),
             KnownPositives(ids=frozenset({"d7"}), texts=frozenset({"dogs are loyal"}))]
    mask = false_negative_mask(["q0", "q1"], queries, ids, cands, known, group_size=2)
    # q0: row 0 own positive (never masked); row 1 equals the query text; row 2 has id d7 (a known
    # positive of q0); row 3 same normalized text as q0's positive
    assert mask[0].tolist() == [False, True, True, True]
    # q1: row 2 is its own positive, nothing else is known to be relevant
    assert mask[1].tolist() == [False, False, False, False]


def test_false_negative_mask_with_label_offset_and_duplicate_own_text():
    queries = ["q"]
    cands = ["p", "x", "p", "y"]  # this rank's block starts at row 2; row 0 is another rank's copy of "p"
    known = [KnownPositives(texts=frozenset({"p"}))]
    mask = false_negative_mask([None], queries, [None] * 4, cands, known, group_size=2, label_offset=2)
    assert mask.tolist() == [[True, False, False, False]]


def test_query_side_mask():
    # positive of query 0 is a known positive of query 2 too; query 1 repeats query 0's text
    known = [KnownPositives(ids=frozenset({"a"})), KnownPositives(ids=frozenset({"b"})),
             KnownPositives(ids=frozenset({"a", "c"}))]
    mask = query_side_mask(["a"], ["text a"], ["Q zero", "q  ZERO", "q two"], known, query_offset=0)
    assert mask.tolist() == [[False, True, True]]


def test_cosent_with_angle_weight_adds_the_angle_objective():
    from textcl.config import LossConfig
    from textcl.data.batching import Batch
    from textcl.train.objective import forward_backward
    table = dict(zip("abcdef", torch.randn(6, 8, generator=torch.Generator().manual_seed(10)).requires_grad_()))
    batch = Batch(queries=list("abc"), candidates=list("def"), group_size=1, scores=[1.0, 4.0, 2.5])
    embed = lambda texts, role: torch.stack([table[t] for t in texts])  # noqa: E731
    e1, e2, s = embed(list("abc"), ""), embed(list("def"), ""), torch.tensor([1.0, 4.0, 2.5])
    plain = forward_backward(embed, batch, LossConfig(name="cosent"))
    both = forward_backward(embed, batch, LossConfig(name="cosent", angle_weight=0.5))
    assert plain == pytest.approx(cosent(e1, e2, s).item(), rel=1e-6)
    assert both == pytest.approx(plain + 0.5 * angle(e1, e2, s).item(), rel=1e-6)


def _anchor_loop(q, b):
    """1 - Pearson correlation of cos(q_i, q_j) and cos(b_i, b_j) over the pairs i < j, python loops."""
    def cos(x, y):
        return float(x @ y) / (float(x.norm()) * float(y.norm()))
    n = q.shape[0]
    pairs = [(i, j) for i in range(n) for j in range(i + 1, n)]
    x = [cos(q[i], q[j]) for i, j in pairs]
    y = [cos(b[i], b[j]) for i, j in pairs]
    mx, my = sum(x) / len(x), sum(y) / len(y)
    cov = sum((a - mx) * (c - my) for a, c in zip(x, y))
    return 1 - cov / math.sqrt(sum((a - mx) ** 2 for a in x) * sum((c - my) ** 2 for c in y))


def test_similarity_anchor_matches_a_loop_in_value_and_gradient():
    g = torch.Generator().manual_seed(3)
    q = torch.randn(5, 6, generator=g, dtype=torch.float64).requires_grad_(True)
    b = torch.randn(5, 4, generator=g, dtype=torch.float64)  # the base tower may even differ in width
    loss = similarity_anchor(q, b)
    loss.backward()
    assert loss.item() == pytest.approx(_anchor_loop(q.detach(), b), abs=1e-6)
    num = finite_differences(lambda x: _anchor_loop(x, b), q)
    assert torch.allclose(q.grad, num, atol=1e-5)


def test_similarity_anchor_is_zero_when_every_pair_keeps_its_similarity_and_for_two_queries():
    g = torch.Generator().manual_seed(4)
    b = torch.randn(6, 8, generator=g)
    rotation, _ = torch.linalg.qr(torch.randn(8, 8, generator=g))
    moved = (b @ rotation) * torch.tensor([[2.0], [0.5], [1.0], [3.0], [1.0], [0.1]])
    assert similarity_anchor(moved, b).item() == pytest.approx(0.0, abs=1e-6)
    assert similarity_anchor(b + 0.5 * torch.randn(6, 8, generator=g), b).item() > 1e-3
    two = torch.randn(2, 8, generator=g, requires_grad=True)
    loss = similarity_anchor(two, b[:2])
    loss.backward()
    assert loss.item() == 0.0 and two.grad is not None
