"""`train.corpus_shard`: the corpus InfoNCE against a training corpus split across the processes (each holds
1/W of the cached embeddings, `TrainingCorpus.keep_shard`), computed exactly by `textcl.shard`: the same loss
and gradients as one process holding the whole corpus.

Per step: the queries are gathered with gradient (every rank scores the global batch against its shard), so are
the batch's exclusions (global rows); positives are looked up by global row on the rank that owns them. The
result is a mean over this rank's queries, a `local` term like the replicated form's (see objective.py).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

from textcl.data.batching import Batch
from textcl.errors import TrainingError
from textcl.shard import gather_pairs, sharded_corpus_info_nce, sharded_sampled_corpus_info_nce
from textcl.train.objective import CorpusInfoNCE, Loss, Step, Sum, Terms
from textcl.types import EmbedFn


@dataclass(frozen=True)
class ShardedCorpusInfoNCE(CorpusInfoNCE):
    """`CorpusInfoNCE` (exact or sampled candidates, one or every positive, live positives for tune: both)
    when `corpus.embeddings` hold this rank's rows only."""

    def __call__(self, embed: EmbedFn, batch: Batch, step: Step) -> Terms:
        corpus, how, t = self.corpus, self.how, self.temperature
        sim = self.similarity
        shard = corpus.shard
        if shard is None:
            raise TrainingError("train.corpus_shard: the training corpus holds every row; call keep_shard first")
        positives, exclude = corpus.targets(batch)
        q = embed(list(batch.queries), "query")
        if shard.embeddings.device != q.device:
            raise TrainingError(f"the training corpus is on {shard.embeddings.device} but queries are on "
                                f"{q.device}: call TrainingCorpus.to(device) once before training")
        every = corpus.positive_pairs(batch) if how.all_positives else None
        pos = None
        if every is None and how.query_side:
            pos = shard.rows(positives.to(q.device))  # from the rank that owns each row
        elif every is None:
            g = batch.group_size
            pos = embed([batch.candidates[i * g] for i in range(len(batch))], "document")
        if how.candidates is not None:
            if step.rng is None:
                raise TrainingError("sampled corpus negatives need the step's random generator (forward_backward rng=)")
            return Terms(local=sharded_sampled_corpus_info_nce(
                q, shard, exclude=exclude, k=how.candidates, samples=how.samples, rng=step.rng, temperature=t,
                positive=pos, positives=every, similarity=sim))
        start = step.offset(step.query_sizes)
        return Terms(local=sharded_corpus_info_nce(
            step.everyone(q), shard, own=(start, start + len(batch)), exclude=gather_pairs(exclude, len(batch)),
            temperature=t, positive=pos, positives=every, similarity=sim))


def shard_loss(loss: Loss) -> Loss:
    """`loss` with its corpus InfoNCE scored against the sharded corpus (unchanged when the corpus is whole)."""
    if isinstance(loss, Sum):
        return Sum(tuple(shard_loss(p) for p in loss.parts))
    if type(loss) is CorpusInfoNCE and loss.corpus.shard is not None:
        return ShardedCorpusInfoNCE(**{f.name: getattr(loss, f.name) for f in fields(loss)})
    return loss
