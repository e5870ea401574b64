"""Multi-document in-context retrieval, after Molfese et al., "Exploring Fine-Tuning for In-Context Retrieval
and Efficient KV-Caching in Long-Context Language Models" (EACL 2026): the chunks that answer a question
(gold) sit among hard negatives retrieved for that question from the same collection, shuffled; the model
answers and, depending on the target variant, first names or reproduces its evidence (`[DOC i]` cites the
prompt's document i). The prompt is the one `lcrag serve` builds for an LC question
(`rag.context.lc_messages`: its instructions, "Document i: <title>" per document, then "Question: ..."), so
an adapter sees when served the format it was trained on; `evals.collection` asks its held-out cloze
questions in this same wording (`question_text`).

Questions are template-made cloze questions and always checkable: a sentence of a gold chunk is shown
with one word blanked out, and the answer is that word. A `pair` question blanks one sentence in each of
two gold chunks. Hard negatives come from the caller's retriever (in `lcrag finetune`, our own RAG
pipeline: the sentence with its blank as the query); chunks that contain a gold sentence (overlapping
neighbours) are never used as negatives, so the gold ids are unambiguous.

Target variants and their scorers (each score in [0, 1]):
- `answer`:      "Answer: w"                               -> answer (every blanked word, whole-word match)
- `ids`:         "Documents: [DOC 3]\nAnswer: w"            -> answer, ids (cited set == gold set)
- `ids+content`: "[DOC 3]\n<chunk>\nAnswer: w"              -> answer, ids, content (gold chunk reproduced)
- `ids+quotes`:  '[DOC 3] "<sentence>"\nAnswer: w'          -> answer, ids, quotes (quote inside its document)
`reward` is the mean of the variant's scores (the GRPO reward).
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from rag.context import LC_TEMPLATE_TOKENS, LcDocument, lc_messages

TARGETS = ("answer", "ids", "ids+content", "ids+quotes")
BLANK = "____"
SENTENCE_END = re.compile(r"(?<=[.!?])\s+")
WORD = re.compile(r"[A-Za-z]+")
DOC_TAG = re.compile(r"\[DOC (\d+)\]")
QUOTE = re.compile(r'\[DOC (\d+)\]\s*"([^"]+)"')
STOPWORDS = frozenset(
    ("about", "above", "after", "again", "against", "because", "before", "being", "below", "between",
     "could", "during", "every", "other", "their", "there", "these", "those", "through", "under", "until",
     "where", "which", "while", "would", "should", "shall", "might")
)  # fmt: skip
MIN_WORD_LETTERS = 5
MIN_SENTENCE_WORDS, MAX_SENTENCE_WORDS = 6, 60
MAX_ATTEMPTS = 50
MIN_CHUNKS = 3
DOC_OVERHEAD_TOKENS = 8  # "Document i: ", the newline after the title and the blank line between documents
INSTRUCTIONS = {
    "answer": "Reply with 'Answer:' followed by the missing {word}.",
    "ids": "First write 'Documents:' and a [DOC i] tag (i: the document's number) for each document that "
    "contains the {sentence}, then 'Answer:' followed by the missing {word}.",
    "ids+content": "First copy each document that contains the {sentence}, starting with a [DOC i] tag (i: "
    "the document's number), then write 'Answer:' followed by the missing {word}.",
    "ids+quotes": 'First quote the {sentence} from the documents as [DOC i] "full sentence" (i: the '
    "document's number), one per line, then write 'Answer:' followed by the missing {word}.",
}

Retriever = Callable[[str, int], list[str]]  # (query, k) -> chunk ids, most similar first


@dataclass(frozen=True)
class CorpusChunk:
    chunk_id: str
    text: str
    tokens: int
    title: str = ""  # its document's title, shown above it in the prompt


@dataclass(frozen=True)
class MultidocConfig:
    target_tokens: int = 2048
    target: str = "ids+quotes"
    pair_share: float = 0.3  # questions whose answer needs two gold chunks
    max_documents: int = 20
    negatives_per_query: int = 20  # retrieved candidates per cloze sentence

    def __post_init__(self) -> None:
        if self.target not in TARGETS:
            raise ValueError(f"Unknown target {self.target!r}; choose one of {', '.join(TARGETS)}.")
        if not 0.0 <= self.pair_share <= 1.0:
            raise ValueError("pair_share must be a fraction in [0, 1].")
        if self.max_documents < 2 or self.target_tokens < 64:
            raise ValueError("max_documents must be at least 2 and target_tokens at least 64.")


@dataclass(frozen=True)
class Cloze:
    chunk_id: str
    sentence: str  # as it stands in the chunk
    word: str  # the blanked word

    @property
    def question(self) -> str:
        return re.sub(rf"\b{re.escape(self.word)}\b", BLANK, self.sentence, count=1)


@dataclass(frozen=True)
class MultidocExample:
    messages: list[dict[str, str]]  # system, user (documents + question), assistant (the target)
    target: str
    answers: list[str]  # the blanked words, in question order
    gold: dict[int, str]  # document number i (cited as [DOC i]) -> that document's text
    quotes: list[str]  # the gold sentences, in question order
    depths: list[float]  # each gold document's place: 0 = first, 1 = last
    documents: int
    prompt_tokens: int
    metadata: dict[str, Any] = field(default_factory=dict)

    def score(self, reply: str) -> dict[str, float]:
        """The variant's scores of a model reply."""
        scores = {"answer": self.answer_score(reply)}
        if self.target != "answer":
            scores["ids"] = self.ids_score(reply)
        if self.target == "ids+content":
            scores["content"] = self.content_score(reply)
        if self.target == "ids+quotes":
            scores["quotes"] = self.quotes_score(reply)
        return scores

    def reward(self, reply: str) -> float:
        scores = self.score(reply)
        return sum(scores.values()) / len(scores)

    def answer_score(self, reply: str) -> float:
        """1 when every blanked word appears as a whole word after the last 'Answer:' (or anywhere)."""
        tail = reply.rsplit("Answer:", 1)[-1].lower()
        return float(all(re.search(rf"\b{re.escape(word.lower())}\b", tail) for word in self.answers))

    def ids_score(self, reply: str) -> float:
        """1 when the set of [DOC i] tags before the answer is exactly the gold set."""
        evidence = reply.rsplit("Answer:", 1)[0]
        return float({int(number) for number in DOC_TAG.findall(evidence)} == set(self.gold))

    def content_score(self, reply: str) -> float:
        """Share of gold documents whose full text follows their tag in the reply (whitespace-insensitive)."""
        flat = _flat(reply)
        return sum(_flat(f"[DOC {i}] {text}") in flat for i, text in self.gold.items()) / len(self.gold)

    def quotes_score(self, reply: str) -> float:
        """Share of gold documents quoted with a sentence of theirs; 0 if any quote is not in its document."""
        quotes = [(int(number), _flat(quote)) for number, quote in QUOTE.findall(reply)]
        if any(quote not in _flat(self.gold.get(number, "")) for number, quote in quotes if quote):
            return 0.0
        quoted = {number for number, quote in quotes if quote}
        return len(quoted & set(self.gold)) / len(self.gold)


def example(
    chunks: Sequence[CorpusChunk],
    retrieve: Retriever,
    tokenizer: Any,
    config: MultidocConfig,
    seed: int,
    index: int,
) -> MultidocExample:
    """Example `index` of the stream for `seed` (deterministic when the retriever is)."""
    return _example(_Pool.of(chunks), retrieve, tokenizer, config, seed, index)


@dataclass(frozen=True)
class _Pool:
    """A collection's chunks by id, and those with a sentence to ask about (computed once per run)."""

    by_id: dict[str, CorpusChunk]
    askable: list[CorpusChunk]

    @classmethod
    def of(cls, chunks: Sequence[CorpusChunk]) -> _Pool:
        askable = [chunk for chunk in chunks if cloze_sentences(chunk.text)]
        if not askable or len(chunks) < MIN_CHUNKS:
            raise ValueError(
                f"Multidoc questions need at least {MIN_CHUNKS} chunks with full sentences (found "
                f"{len(chunks)} chunks, {len(askable)} with a sentence to ask about); add documents to the "
                "collection."
            )
        return cls({chunk.chunk_id: chunk for chunk in chunks}, askable)


def _example(
    pool: _Pool, retrieve: Retriever, tokenizer: Any, config: MultidocConfig, seed: int, index: int
) -> MultidocExample:
    rng = random.Random(f"multidoc:{seed}:{index}")
    by_id, askable = pool.by_id, pool.askable
    wanted = 2 if rng.random() < config.pair_share and len(askable) >= 2 else 1
    for _ in range(MAX_ATTEMPTS):
        clozes = [_cloze(chunk, rng) for chunk in rng.sample(askable, wanted)]
        negatives = _negatives(clozes, by_id, retrieve, config)
        if negatives:
            break
    else:
        raise ValueError("No negatives found: every retrieved chunk repeats the asked sentences.")
    question = question_text(clozes, config.target)
    budget = config.target_tokens - LC_TEMPLATE_TOKENS - _count_tokens(tokenizer, question)

    def cost(chunk_id: str) -> int:
        chunk = by_id[chunk_id]
        return chunk.tokens + _count_tokens(tokenizer, chunk.title) + DOC_OVERHEAD_TOKENS

    documents = _fit(clozes, negatives, cost, budget, config.max_documents, rng)
    gold_ids = [cloze.chunk_id for cloze in clozes]
    numbers = {chunk_id: number for number, chunk_id in enumerate(documents, start=1)}
    prompt = lc_messages(question, [LcDocument(i, by_id[i].title, by_id[i].text) for i in documents])
    gold = {numbers[i]: by_id[i].text for i in gold_ids}
    reply = _target(clozes, numbers, by_id, config.target)
    last = max(1, len(documents) - 1)
    return MultidocExample(
        messages=[*prompt, {"role": "assistant", "content": reply}],
        target=config.target,
        answers=[cloze.word for cloze in clozes],
        gold=gold,
        quotes=[cloze.sentence for cloze in clozes],
        depths=[documents.index(i) / last for i in gold_ids],
        documents=len(documents),
        prompt_tokens=_count_tokens(tokenizer, tokenizer.apply_chat_template(prompt, tokenize=False)),
        metadata={"gold_chunk_ids": gold_ids, "negatives": [i for i in documents if i not in gold_ids]},
    )


def cloze_sentences(text: str) -> list[str]:
    """The sentences of `text` a cloze question can be made of."""
    return [
        sentence for sentence in (s.strip() for s in SENTENCE_END.split(text)) if is_cloze_sentence(sentence)
    ]


def is_cloze_sentence(sentence: str) -> bool:
    """No quotes, a moderate length, and a word that can be blanked."""
    return (
        '"' not in sentence
        and MIN_SENTENCE_WORDS <= len(sentence.split()) <= MAX_SENTENCE_WORDS
        and bool(blankable_words(sentence))
    )


def blankable_words(sentence: str) -> list[str]:
    """Words of `sentence` whose blank has one answer: long, not a stop word, not repeated."""
    words = WORD.findall(sentence)
    lower = [word.lower() for word in words]
    return [
        word
        for word in words
        if len(word) >= MIN_WORD_LETTERS and word.lower() not in STOPWORDS and lower.count(word.lower()) == 1
    ]


def _cloze(chunk: CorpusChunk, rng: random.Random) -> Cloze:
    sentence = rng.choice(cloze_sentences(chunk.text))
    return Cloze(chunk.chunk_id, sentence, rng.choice(blankable_words(sentence)))


def _negatives(
    clozes: list[Cloze], by_id: dict[str, CorpusChunk], retrieve: Retriever, config: MultidocConfig
) -> list[str]:
    """Retrieved chunk ids for the questions, most similar first (interleaved over the clozes), without the
    gold chunks and without any chunk that also contains a gold sentence."""
    gold = {cloze.chunk_id for cloze in clozes}
    sentences = [_flat(cloze.sentence) for cloze in clozes]
    ranked = [retrieve(cloze.question, config.negatives_per_query) for cloze in clozes]
    interleaved = [ids[rank] for rank in range(max(map(len, ranked))) for ids in ranked if rank < len(ids)]
    found: list[str] = []
    for chunk_id in interleaved:
        fresh = chunk_id in by_id and chunk_id not in found and chunk_id not in gold
        if fresh and not any(sentence in _flat(by_id[chunk_id].text) for sentence in sentences):
            found.append(chunk_id)
    return found


def _fit(
    clozes: list[Cloze],
    negatives: list[str],
    cost: Callable[[str], int],
    budget: int,
    max_documents: int,
    rng: random.Random,
) -> list[str]:
    """Gold plus the most similar negatives whose `cost`s fit `budget` tokens, in random order."""
    chosen = [cloze.chunk_id for cloze in clozes]
    used = sum(map(cost, chosen))
    picked: list[str] = []
    for chunk_id in negatives:
        tokens = cost(chunk_id)
        if len(chosen) + len(picked) >= max_documents or used + tokens > budget:
            break
        picked.append(chunk_id)
        used += tokens
    rng.shuffle(picked)
    for chunk_id in chosen:
        picked.insert(rng.randint(0, len(picked)), chunk_id)
    return picked


def question_text(clozes: Sequence[Cloze], target: str = "answer") -> str:
    """The question of `clozes`: each sentence with its blank, then the target variant's instructions."""
    plural = len(clozes) > 1
    lines = [f'{n}. "{cloze.question}"' for n, cloze in enumerate(clozes, start=1)]
    head = (
        f"Each sentence below appears in one of the documents above with a word replaced by {BLANK}."
        if plural
        else f"The sentence below appears in one of the documents above with a word replaced by {BLANK}."
    )
    instructions = INSTRUCTIONS[target].format(
        word="words, in order, separated by '; '" if plural else "word",
        sentence="sentences" if plural else "sentence",
    )
    return "\n".join([head, *lines, instructions])


def _target(clozes: list[Cloze], numbers: dict[str, int], by_id: dict[str, CorpusChunk], target: str) -> str:
    answer = "Answer: " + "; ".join(cloze.word for cloze in clozes)
    tags = [f"[DOC {numbers[cloze.chunk_id]}]" for cloze in clozes]
    if target == "ids":
        evidence = "Documents: " + ", ".join(tags)
    elif target == "ids+content":
        texts = [by_id[cloze.chunk_id].text for cloze in clozes]
        evidence = "\n\n".join(f"{tag}\n{text}" for tag, text in zip(tags, texts, strict=True))
    elif target == "ids+quotes":
        evidence = "\n".join(f'{tag} "{cloze.sentence}"' for tag, cloze in zip(tags, clozes, strict=True))
    else:
        return answer
    return f"{evidence}\n{answer}"


def _count_tokens(tokenizer: Any, text: str) -> int:
    return len(tokenizer(text, add_special_tokens=False).input_ids)


def _flat(text: str) -> str:
    return " ".join(text.split())


def examples(
    chunks: Sequence[CorpusChunk],
    retrieve: Retriever,
    tokenizer: Any,
    config: MultidocConfig,
    count: int,
    seed: int = 0,
) -> list[MultidocExample]:
    pool = _Pool.of(chunks)
    return [_example(pool, retrieve, tokenizer, config, seed, i) for i in range(count)]


def reward_functions(items: Sequence[MultidocExample]) -> list[Callable[..., list[float]]]:
    """GRPO rewards, one per score of the items' variant (TRL logs each under its name). TRL passes the
    dataset's `example` column: each completion's index into `items`."""

    def make(kind: str) -> Callable[..., list[float]]:
        def reward(completions: list[Any], example: list[int], **_: Any) -> list[float]:
            return [items[i].score(_reply_text(c))[kind] for c, i in zip(completions, example, strict=True)]

        reward.__name__ = f"{kind}_reward"
        return reward

    first = items[0]
    return [make(kind) for kind in first.score(first.messages[-1]["content"])]


def _reply_text(completion: Any) -> str:
    """A TRL completion: plain text, or a conversational list of messages (the assistant's last)."""
    return completion if isinstance(completion, str) else completion[-1]["content"]
