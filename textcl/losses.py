"""Contrastive losses as pure functions of embeddings: InfoNCE (in-batch + hard negatives, optional
symmetric term, false-negative masking), CoSENT for scored pairs, and unsupervised SimCSE.

Nothing here touches a model, a process group or a file; `train/objective.py` embeds, gathers and
scales. Logits are computed in float32 whatever the embedding dtype.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

from textcl.exclusion import ExclusionIndex, KnownPositives  # KnownPositives re-exported for callers
from textcl.scores import INNER_PRODUCT, paired_scores, pairwise_scores
from textcl.types import normalize_text  # one definition of "same text"


def _labels(n: int, group_size: int, offset: int, device: torch.device) -> torch.Tensor:
    return offset + torch.arange(n, device=device) * group_size


def info_nce(query: torch.Tensor, candidates: torch.Tensor, *, temperature: float, group_size: int,
             label_offset: int = 0, mask: torch.Tensor | None = None, symmetric: bool = False,
             all_queries: torch.Tensor | None = None, query_offset: int = 0,
             query_mask: torch.Tensor | None = None, similarity: str = "dot") -> torch.Tensor:
    """Mean InfoNCE over the B local queries.

    Layout: `query` [B, D]; `candidates` [M, D] are the local B * group_size rows or the rows of
    all ranks concatenated (rank order). Label: the positive of local query i is candidate row
    `label_offset + i * group_size` (label_offset = number of candidate rows of earlier ranks).
    loss_i = -log softmax_j(s(q_i, c_j) / temperature)[label_i], s = `textcl.knn.pairwise_scores` by
    `similarity` (q . c for cosine over unit vectors and dot; minus the distance for euclidean / manhattan);
    `mask` [B, M] (True = exclude) removes in-batch false negatives from the softmax; the label entry is
    never masked.

    symmetric: adds the positive -> query direction and averages the two: for positive p_i the
    softmax runs over `all_queries` [N, D] (default: `query`), label `query_offset + i`, with
    `query_mask` [B, N] excluding other queries that p_i is known to answer.

    World size: the value is a mean over LOCAL queries, independent of world size. For DDP
    (gradient averaged over ranks) to reproduce the full-batch gradient, the caller multiplies
    it by B_local * world / B_global (see train/objective.py).
    """
    q, c = query.float(), candidates.float()
    b = q.shape[0]
    labels = _labels(b, group_size, label_offset, q.device)
    loss = _masked_ce(pairwise_scores(q, c, similarity) / temperature, labels, mask)
    if not symmetric:
        return loss
    p = c[labels]
    qs = q if all_queries is None else all_queries.float()
    back = _masked_ce(pairwise_scores(p, qs, similarity) / temperature, torch.arange(b, device=q.device)
                      + query_offset, query_mask)
    return (loss + back) / 2


def _masked_ce(logits: torch.Tensor, labels: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    if mask is not None:
        rows = torch.arange(logits.shape[0], device=logits.device)
        mask = mask.clone()
        mask[rows, labels] = False  # the anchor's own positive always stays in the softmax
        logits = logits.masked_fill(mask, float("-inf"))
    return F.cross_entropy(logits, labels)


def simcse(view1: torch.Tensor, view2: torch.Tensor, *, temperature: float) -> torch.Tensor:
    """Unsupervised SimCSE: two dropout views of the same texts; view2[i] is the positive of view1[i]
    and the other rows of view2 are negatives. Equal to info_nce with group_size 1."""
    return info_nce(view1, view2, temperature=temperature, group_size=1)


def cosent(emb1: torch.Tensor, emb2: torch.Tensor, scores: torch.Tensor, *,
           temperature: float = 0.05) -> torch.Tensor:
    """CoSENT (Su, 2022): log(1 + sum over pairs (i, j) with score_i > score_j of
    exp((cos_j - cos_i) / temperature)), cos_k = cosine(emb1[k], emb2[k]); 1/temperature = 20.

    One value for the whole batch (not a per-row mean): under DDP every rank must compute it over the
    gathered pairs, unscaled, for the averaged gradient to equal the full-batch gradient.
    """
    return _rank_loss(F.cosine_similarity(emb1.float(), emb2.float(), dim=-1) / temperature, scores)


def angle_similarity(emb1: torch.Tensor, emb2: torch.Tensor) -> torch.Tensor:
    """AnglE's pairwise angle score (Li & Li, 2023): the halves of each embedding are the real and
    imaginary parts of complex vectors z and w; the score is |sum_k Re(z_k conj(w_k)) + Im(...)| /
    (|z| |w|), a similarity that keeps a gradient where cosine saturates. Equal to
    sentence-transformers' `pairwise_angle_sim`."""
    a, b = torch.chunk(emb1.float(), 2, dim=-1)
    c, d = torch.chunk(emb2.float(), 2, dim=-1)
    w2 = (c * c + d * d).sum(-1, keepdim=True)
    re, im = (a * c + b * d) / w2, (b * c - a * d) / w2
    scale = w2.sqrt() / (a * a + b * b).sum(-1, keepdim=True).sqrt()  # |w| / |z|
    return ((re + im) * scale).sum(-1).abs()


def _rank_loss(sim: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
    s = scores.to(sim.device, torch.float32)
    diff = sim[None, :] - sim[:, None]  # diff[i, j] = sim_j - sim_i
    diff = diff.masked_fill(~(s[:, None] > s[None, :]), float("-inf"))
    return torch.logsumexp(torch.cat([diff.new_zeros(1), diff.flatten()]), dim=0)


def angle(emb1: torch.Tensor, emb2: torch.Tensor, scores: torch.Tensor, *,
          temperature: float = 0.05) -> torch.Tensor:
    """AnglE's angle objective: the CoSENT ranking loss over `angle_similarity` instead of cosine."""
    return _rank_loss(angle_similarity(emb1, emb2) / temperature, scores)


def false_negative_mask(query_ids: Sequence[str | None], query_texts: Sequence[str],
                        cand_ids: Sequence[str | None], cand_texts: Sequence[str],
                        positive_sets: Sequence[KnownPositives], *, group_size: int,
                        label_offset: int = 0) -> torch.Tensor:
    """Bool [B, M], True = candidate j is a false negative for query i and leaves its softmax.

    Masked: what `ExclusionIndex.excluded` names for the query (a known positive id, a known positive's
    normalized text, the query's normalized text). Never masked: the query's own positive, row
    label_offset + i * group_size. (query_ids are accepted for symmetry with the batch; ids of queries
    and candidates live in different namespaces and are not compared.)
    """
    del query_ids
    index = ExclusionIndex.of_documents(cand_texts, cand_ids)
    mask = torch.zeros(len(query_texts), len(cand_texts), dtype=torch.bool)
    for i, qtext in enumerate(query_texts):
        hits = sorted(index.excluded(positive_sets[i] if positive_sets else KnownPositives(), qtext))
        if hits:
            mask[i, hits] = True
        mask[i, label_offset + i * group_size] = False
    return mask


def query_side_mask(positive_ids: Sequence[str | None], positive_texts: Sequence[str],
                    all_query_texts: Sequence[str], all_positive_sets: Sequence[KnownPositives],
                    *, query_offset: int = 0) -> torch.Tensor:
    """Bool [B, N] for the symmetric term, the same rule seen from the positive: query j is excluded for
    local positive i when that positive is a known positive of query j (id or normalized text) or query
    j's text equals query (query_offset + i)'s text. Query query_offset + i itself is never masked."""
    by_known = ExclusionIndex()  # row j = query j, keyed by its known positives
    for j, known in enumerate(all_positive_sets):
        by_known.add(j, ids=known.ids, texts=known.texts)
    by_query = ExclusionIndex.of_documents(all_query_texts)
    mask = torch.zeros(len(positive_texts), len(all_query_texts), dtype=torch.bool)
    for i, (pid, ptext) in enumerate(zip(positive_ids, positive_texts)):
        own = query_offset + i
        hits = (by_known.rows_of_id(pid) + by_known.rows_of_text(normalize_text(ptext))
                + by_query.rows_of_text(normalize_text(all_query_texts[own])))
        if hits:
            mask[i, hits] = True
        mask[i, own] = False
    return mask


# ------------------------------------------------------------------ corpus-wide negatives


def similarity_anchor(query: torch.Tensor, base: torch.Tensor) -> torch.Tensor:
    """1 - the Pearson correlation between the cosine similarities of every two different rows of `query`
    [B, D] (with grad) and those of the same pairs under `base` [B, D'] (the frozen base model's embeddings
    of the same texts).

    Zero while the tuned tower ranks text pairs as the base model does, whatever it does to the similarity
    between a query and a document: it holds text-vs-text similarity (STS through the query tower) while the
    contrastive loss moves queries towards their documents. Invariant to a shift and scale of all
    similarities, as a rank metric like STS's Spearman is, so that dropout (which lowers every training-time
    similarity) does not pull the tower away from the base model. Fewer than 3 rows: 0."""
    n = query.shape[0]
    if n < 3:
        return query.sum() * 0.0
    q = torch.nn.functional.normalize(query.float(), dim=-1)
    b = torch.nn.functional.normalize(base.float().to(query.device), dim=-1)
    upper = torch.triu_indices(n, n, offset=1, device=query.device)
    tuned, fixed = (q @ q.T)[upper[0], upper[1]], (b @ b.T)[upper[0], upper[1]]
    tuned, fixed = tuned - tuned.mean(), fixed - fixed.mean()
    return 1.0 - (tuned * fixed).sum() / (tuned.norm() * fixed.norm()).clamp_min(1e-12)


class _CorpusLogSumExp(torch.autograd.Function):
    """lse_i = log sum_{j not excluded} exp(s(q_i, c_j) / t) over a frozen corpus, computed in chunks
    (s = `pairwise_scores` by similarity).

    Forward keeps only lse [B]; backward recomputes each chunk's softmax, so memory is
    O(B * chunk_size) whatever the corpus size. The corpus gets no gradient (it is a cache)."""

    @staticmethod
    def forward(ctx, q, corpus, ex_rows, ex_cols, temperature, chunk_size, similarity="dot"):  # type: ignore[override]
        lse = torch.full((q.shape[0],), -torch.inf, dtype=torch.float32, device=q.device)
        for _, logits in _corpus_chunks(q.detach(), corpus, ex_rows, ex_cols, temperature, chunk_size, similarity):
            lse = torch.logaddexp(lse, torch.logsumexp(logits, dim=1))
        ctx.save_for_backward(q.detach(), corpus, ex_rows, ex_cols, lse)
        ctx.temperature, ctx.chunk_size, ctx.similarity = temperature, chunk_size, similarity
        return lse

    @staticmethod
    def backward(ctx, grad_lse):  # type: ignore[override]
        q, corpus, ex_rows, ex_cols, lse = ctx.saved_tensors
        lse = torch.where(torch.isfinite(lse), lse, torch.zeros_like(lse))  # all excluded: every p is 0
        if ctx.similarity not in INNER_PRODUCT:  # d lse / d q through the distance, by autograd per chunk
            qq = q.detach().float().requires_grad_(True)
            with torch.enable_grad():
                for _, logits in _corpus_chunks(qq, corpus, ex_rows, ex_cols, ctx.temperature, ctx.chunk_size,
                                                ctx.similarity):
                    logits.backward(torch.exp(logits.detach() - lse[:, None]) * grad_lse[:, None])
            grad = qq.grad if qq.grad is not None else torch.zeros_like(qq)
            return grad.to(q.dtype), None, None, None, None, None, None
        grad_q = torch.zeros_like(q, dtype=torch.float32)
        for start, logits in _corpus_chunks(q, corpus, ex_rows, ex_cols, ctx.temperature, ctx.chunk_size):
            p = torch.exp(logits - lse[:, None])  # softmax weights of this chunk (0 where excluded)
            block = corpus[start:start + logits.shape[1]].float()
            grad_q += p @ block
        grad_q = grad_q * (grad_lse[:, None] / ctx.temperature)
        return grad_q.to(q.dtype), None, None, None, None, None, None


def _corpus_chunks(q, corpus, ex_rows, ex_cols, temperature, chunk_size, similarity="dot"):
    """(start, logits [B, chunk]) over the corpus in fp32, excluded (row, col) pairs set to -inf. A distance's
    chunk is capped so that its [B, chunk, D] temporaries (cdist's L1 backward) stay about 64 MB."""
    qf = q.float()
    if similarity not in INNER_PRODUCT:
        chunk_size = max(64, min(chunk_size, (1 << 24) // max(1, qf.shape[0] * qf.shape[1])))
    for start in range(0, corpus.shape[0], chunk_size):
        stop = min(start + chunk_size, corpus.shape[0])
        logits = pairwise_scores(qf, corpus[start:stop].float(), similarity) / temperature
        sel = (ex_cols >= start) & (ex_cols < stop)
        if bool(sel.any()):
            logits[ex_rows[sel], ex_cols[sel] - start] = -torch.inf
        yield start, logits


def _positive_mean(query: torch.Tensor, per: torch.Tensor, pos_rows: torch.Tensor) -> torch.Tensor:
    """Mean over queries of the mean of their per-positive losses `per` [P] (positive p belongs to
    query `pos_rows[p]`)."""
    b = query.shape[0]
    total = torch.zeros(b, dtype=per.dtype, device=per.device).index_add(0, pos_rows, per)
    count = torch.zeros(b, dtype=per.dtype, device=per.device).index_add(0, pos_rows, torch.ones_like(per))
    return (total / count.clamp(min=1)).mean()


def _positive_scores(query: torch.Tensor, positive: torch.Tensor | None, corpus: torch.Tensor | None,
                     positives: tuple[torch.Tensor, torch.Tensor] | None,
                     temperature: float, similarity: str = "dot") -> tuple[torch.Tensor, torch.Tensor]:
    """(scores [P], query row of each [P]): one `positive` [B, D] per query, or every (row, col) pair of
    `positives` (query row, row of `corpus`)."""
    q = query.float()
    if positives is None:
        if positive is None:
            raise ValueError("give positive (one per query) or positives (query row, corpus row) pairs")
        return (paired_scores(q, positive.float(), similarity) / temperature,
                torch.arange(q.shape[0], device=q.device))
    if corpus is None:
        raise ValueError("positives (query row, corpus row) need the corpus they index")
    rows, cols = (t.to(q.device) for t in positives)
    if bool((torch.bincount(rows, minlength=q.shape[0]) == 0).any()):
        raise ValueError("every query needs at least one positive in `positives`")
    return paired_scores(q[rows], corpus[cols.to(corpus.device)].float().to(q.device), similarity) / temperature, rows


def corpus_info_nce(query: torch.Tensor, positive: torch.Tensor | None, corpus: torch.Tensor, *,
                    exclude: tuple[torch.Tensor, torch.Tensor], temperature: float,
                    chunk_size: int = 65536,
                    positives: tuple[torch.Tensor, torch.Tensor] | None = None,
                    similarity: str = "dot") -> torch.Tensor:
    """Mean InfoNCE of each query against its positive(s) and the WHOLE corpus as negatives.

    `query` [B, D] (with grad); `positive` [B, D] (the sampled positive of each query: a row of the
    cached corpus, or a live embedding with grad); `corpus` [N, D] frozen (fp32, fp16 or bf16; scores
    are computed in fp32). `exclude` = (rows, cols): corpus entries left out of query `row`'s
    denominator — its known positives (the sampled one included: it enters once, as `positive`),
    documents with a positive's or the query's text.
        loss_i = -s_ip + log(exp(s_ip) + sum_{j not excluded} exp(s_ij)),   s = score(q, c) / temperature
    (score = `textcl.knn.pairwise_scores` by `similarity`: q . c, or minus the euclidean / manhattan distance)
    A mean over the B local queries, like `info_nce` (the caller scales for world size).

    `positives` = (query rows, corpus rows) instead of `positive`: every known positive p of query i
    is a target (each against the same negatives, its fellow positives excluded), and loss_i is the
    mean of the per-positive terms (SupCon's L_out), so a query weighs the same however many positives
    it has.
    """
    rows, cols = exclude
    lse = _CorpusLogSumExp.apply(query, corpus, rows.to(query.device), cols.to(query.device), temperature,
                                 chunk_size, similarity)
    scores, pos_rows = _positive_scores(query, positive, corpus, positives, temperature, similarity)
    return _positive_mean(query, torch.logaddexp(scores, lse[pos_rows]) - scores, pos_rows)


def sampled_corpus_info_nce(query: torch.Tensor, positive: torch.Tensor | None, hard: torch.Tensor,
                            hard_valid: torch.Tensor, sampled: torch.Tensor, sampled_valid: torch.Tensor, *,
                            corpus_size: int, temperature: float, corpus: torch.Tensor | None = None,
                            positives: tuple[torch.Tensor, torch.Tensor] | None = None,
                            similarity: str = "dot") -> torch.Tensor:
    """InfoNCE against a bounded candidate set that estimates the whole-corpus denominator.

    For query i: `hard` [B, K, D] are its top-K corpus documents (from the cached index), counted
    exactly; `sampled` [M, D] are M documents drawn uniformly WITH replacement from all N =
    `corpus_size` documents, shared by the batch. `hard_valid` [B, K] / `sampled_valid` [B, M] are
    False where the document is excluded for query i (a known positive, same text) and, for samples,
    where it is one of i's top-K (already counted exactly). Then
        Z_i = sum_{j in top-K_i} e^{s_ij} + sum_{j in rest_i} e^{s_ij}
    and (N / M) * sum_{m: valid} e^{s_im} is an unbiased estimate of the second sum (a draw hits a
    given document with probability 1/N, so M draws count it M/N times on average), so sampled
    logits get + log(N / M) and the estimate enters the logsumexp as it is. The loss
    is -s_ip + log(e^{s_ip} + Z_i_hat), a mean over B. Exact when top-K covers the corpus.
    `positives` (query row, corpus row of `corpus`) instead of `positive`: every known positive is a
    target, as in `corpus_info_nce`.
    """
    q = query.float()
    hard_logits = (torch.einsum("bd,bkd->bk", q, hard.float()) if similarity in INNER_PRODUCT
                   else paired_scores(q[:, None, :], hard.float(), similarity)) / temperature
    parts = [hard_logits.masked_fill(~hard_valid, -torch.inf)]
    if sampled.shape[0]:
        samp = pairwise_scores(q, sampled.float(), similarity) / temperature + math.log(corpus_size / sampled.shape[0])
        parts.append(samp.masked_fill(~sampled_valid, -torch.inf))
    negatives = torch.cat(parts, dim=1)
    scores, pos_rows = _positive_scores(query, positive, corpus, positives, temperature, similarity)
    # the positive inside the logsumexp keeps it finite when every candidate is excluded
    per = torch.logsumexp(torch.cat([scores[:, None], negatives[pos_rows]], dim=1), dim=1) - scores
    return _positive_mean(query, per, pos_rows)
