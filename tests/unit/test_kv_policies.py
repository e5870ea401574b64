"""Each eviction policy's scores against an independent naive reference: plain Python loops over heads,
queries and keys in float64, written from the papers' definitions, not from the vectorised code."""

import math

import pytest
import torch

from compression import registry
from compression.budget import pyramid_budgets, uniform_budgets
from compression.policies import LayerView, keep_indices, kept_count, reconstruction
from compression.policies.attention import H2O, TOVA, ChunkKV, ExpectedAttention, SnapKV
from compression.policies.base import Policy, Rotary, cached_tokens, kept_tokens
from compression.policies.reconstruction import KVzip, ReconstructionView, chunk_max
from compression.policies.simple import KeyNorm, RandomEviction, StreamingLLM

KV_HEADS, GROUP, N, D = 2, 3, 40, 16
INF = float("inf")


def random_view(window: int | None, seed: int = 0) -> LayerView:
    generator = torch.Generator().manual_seed(seed)
    keys = torch.randn(KV_HEADS, N, D, generator=generator)
    values = torch.randn(KV_HEADS, N, D, generator=generator)
    queries = torch.randn(KV_HEADS * GROUP, N, D, generator=generator)
    return LayerView(keys, values, queries if window is None else queries[:, N - window :, :])


def attention_row(view: LayerView, q_head: int, query_index: int) -> list[float]:
    """softmax_j(q . k_j / sqrt(d)) over the keys up to the query's own position; 0 after it."""
    w = view.queries.shape[1]
    position = N - w + query_index
    q = view.queries[q_head, query_index].double().tolist()
    k_head = q_head // GROUP
    keys = [view.keys[k_head, j].double().tolist() for j in range(position + 1)]
    logits = [sum(a * b for a, b in zip(q, k, strict=True)) / math.sqrt(D) for k in keys]
    top = max(logits)
    weights = [math.exp(x - top) for x in logits]
    total = sum(weights)
    return [x / total for x in weights] + [0.0] * (N - position - 1)


def close(actual: torch.Tensor, expected: list[list[float]]) -> None:
    expected_tensor = torch.tensor(expected, dtype=torch.float64)
    assert actual.shape == expected_tensor.shape
    finite = torch.isfinite(expected_tensor)
    assert torch.equal(torch.isfinite(actual.double()), finite)
    assert torch.allclose(actual.double()[finite], expected_tensor[finite], atol=1e-5, rtol=1e-4)


def test_streaming_llm_keeps_sinks_and_the_most_recent() -> None:
    view = random_view(window=0)
    expected = [[float(j) for j in range(N)] for _ in range(KV_HEADS)]
    policy = StreamingLLM(sinks=4)
    close(policy.score(view), expected)
    assert policy.must_keep(N).nonzero().squeeze(1).tolist() == [0, 1, 2, 3]
    kept = keep_indices(policy.score(view), 10, policy.must_keep(N))
    assert kept[0].tolist() == [0, 1, 2, 3, 34, 35, 36, 37, 38, 39]


def test_knorm_prefers_small_keys() -> None:
    view = random_view(window=0)
    expected = [[-math.sqrt(sum(x * x for x in view.keys[h, j].double().tolist())) for j in range(N)]
                for h in range(KV_HEADS)]  # fmt: skip
    close(KeyNorm().score(view), expected)


@pytest.mark.parametrize(("window", "kernel"), [(8, 5), (4, 3), (1, 1)])
def test_snapkv_is_pooled_window_attention_with_the_window_protected(window: int, kernel: int) -> None:
    view = random_view(window=window)
    prefix = N - window
    expected = []
    for h in range(KV_HEADS):
        row = [0.0] * prefix
        for g in range(GROUP):
            rows = [attention_row(view, h * GROUP + g, i) for i in range(window)]
            mean = [sum(r[j] for r in rows) / window for j in range(prefix)]
            half = kernel // 2
            pooled = [sum(mean[t] for t in range(j - half, j + half + 1) if 0 <= t < prefix) / kernel
                      for j in range(prefix)]  # fmt: skip
            row = [a + b / GROUP for a, b in zip(row, pooled, strict=True)]
        expected.append(row + [0.0] * window)
    policy = SnapKV(window=window, kernel=kernel)
    close(policy.score(view), expected)
    assert policy.must_keep(N).nonzero().squeeze(1).tolist() == list(range(prefix, N))


@pytest.mark.parametrize(("window", "chunk"), [(8, 5), (4, 7), (1, 1)])
def test_chunkkv_sums_window_attention_per_chunk_for_every_head(window: int, chunk: int) -> None:
    view = random_view(window=window)
    prefix = N - window
    per_token = [0.0] * prefix
    for qh in range(KV_HEADS * GROUP):
        for i in range(window):
            per_token = [a + b for a, b in zip(per_token, attention_row(view, qh, i)[:prefix], strict=True)]
    chunk_sums = [sum(per_token[c : c + chunk]) for c in range(0, prefix, chunk)]
    shared = [chunk_sums[j // chunk] for j in range(prefix)] + [0.0] * window
    close(ChunkKV(window=window, chunk=chunk, layers="own").score(view), [shared] * KV_HEADS)


def test_chunkkv_layers_from_vote_from_share_one_normalised_vote() -> None:
    window, layers = 4, 5
    own = [ChunkKV(window=window).score(random_view(window=window, seed=layer)) for layer in range(layers)]
    voters = [layer for layer in range(layers) if layer >= 0.4 * layers]  # layers 2, 3 and 4
    shares = []
    for layer in voters:
        row = own[layer][0, : N - window].double().tolist()
        shares.append([x / sum(row) for x in row])
    vote = [sum(share[j] for share in shares) / len(shares) for j in range(N - window)] + [0.0] * window
    shared = ChunkKV(window=window).across_layers(own)
    assert len(shared) == layers
    for scores in shared:
        close(scores, [vote] * KV_HEADS)
    assert ChunkKV(window=window, layers="own").across_layers(own) == own
    with pytest.raises(registry.PolicyError, match="layers must be 'shared' or 'own'"):
        registry.create("chunkkv", layers="every")


def test_tova_uses_the_last_querys_attention_averaged_over_all_heads() -> None:
    view = random_view(window=1)
    rows = [attention_row(view, qh, 0) for qh in range(KV_HEADS * GROUP)]
    shared = [sum(r[j] for r in rows) / len(rows) for j in range(N)]
    close(TOVA().score(view), [shared] * KV_HEADS)
    assert TOVA().must_keep(N).nonzero().squeeze(1).tolist() == [N - 1]


@pytest.mark.parametrize("window", [32, 0])
def test_h2o_accumulates_every_prompt_querys_attention_and_keeps_the_recent_window(window: int) -> None:
    view = random_view(window=None)
    expected = []
    for h in range(KV_HEADS):
        total = [0.0] * N
        for g in range(GROUP):
            for i in range(N):
                total = [
                    a + b / GROUP for a, b in zip(total, attention_row(view, h * GROUP + g, i), strict=True)
                ]
        expected.append(total)
    close(H2O(window=window).score(view), expected)
    assert H2O(window=window).must_keep_count(N) == window
    blocked = view.accumulated_attention(block=7)  # the query blocks add up to the whole
    assert torch.allclose(blocked, view.window_attention().sum(dim=1), atol=1e-5)


@pytest.mark.parametrize(("window", "block"), [(13, 5), (13, 13), (40, 64), (1, 4)])
def test_accumulated_attention_of_the_last_queries_sums_their_causal_rows(window: int, block: int) -> None:
    view = random_view(window=window, seed=3)
    expected = [
        [sum(column) for column in zip(*(attention_row(view, head, i) for i in range(window)), strict=True)]
        for head in range(KV_HEADS * GROUP)
    ]
    close(view.accumulated_attention(block=block), expected)


def toy_rotary(theta: float = 100.0) -> Rotary:
    """RoPE over all D dims, rotate-half convention, frequencies theta^(-2f/D)."""
    frequencies = theta ** (-torch.arange(D // 2, dtype=torch.float64) * 2 / D)

    def cos_sin(positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        angles = positions.double().unsqueeze(1) * frequencies
        return angles.cos().float(), angles.sin().float()

    return Rotary(cos_sin, D, max_position=10_000)


def test_expected_attention_models_future_queries_from_the_spans_own() -> None:
    window, future, sinks = 24, 8, 4
    rotary = toy_rotary()
    base = random_view(window=window)
    view = LayerView(base.keys, base.values, base.queries, rotary)
    half = D // 2
    frequencies = [100.0 ** (-2 * f / D) for f in range(half)]
    ahead = range(N, N + future)
    mean_cos = [sum(math.cos(p * w) for p in ahead) / future for w in frequencies]
    mean_sin = [sum(math.sin(p * w) for p in ahead) / future for w in frequencies]

    def rotate_back(q: list[float], position: int) -> list[float]:
        out = list(q)
        for f, w in enumerate(frequencies):
            c, s_ = math.cos(position * w), math.sin(position * w)
            out[f], out[f + half] = q[f] * c + q[f + half] * s_, q[f + half] * c - q[f] * s_
        return out

    def average_rotation(x: list[float]) -> list[float]:
        out = list(x)
        for f in range(half):
            out[f] = x[f] * mean_cos[f] - x[f + half] * mean_sin[f]
            out[f + half] = x[f + half] * mean_cos[f] + x[f] * mean_sin[f]
        return out

    per_head = []
    for qh in range(KV_HEADS * GROUP):
        qs = [rotate_back(view.queries[qh, i].double().tolist(), N - window + i) for i in range(window)]
        qs = [q for i, q in enumerate(qs) if N - window + i >= sinks]
        mean = [sum(q[a] for q in qs) / len(qs) for a in range(D)]
        cov = [
            [sum((q[a] - mean[a]) * (q[b] - mean[b]) for q in qs) / len(qs) for b in range(D)]
            for a in range(D)
        ]
        mu = average_rotation(mean)
        columns = [average_rotation([cov[a][b] for a in range(D)]) for b in range(D)]  # R Sigma, by column
        rows = [average_rotation([columns[b][a] for b in range(D)]) for a in range(D)]  # (R (R Sigma)^T)^T
        sigma = [[rows[b][a] for b in range(D)] for a in range(D)]
        logits = []
        for j in range(N):
            k = view.keys[qh // GROUP, j].double().tolist()
            quad = sum(k[a] * sigma[a][b] * k[b] for a in range(D) for b in range(D))
            logits.append(sum(k[a] * mu[a] for a in range(D)) / math.sqrt(D) + quad / (2 * D))
        top = max(logits)
        weights = [math.exp(x - top) for x in logits]
        per_head.append([w / sum(weights) for w in weights])
    expected = []
    for h in range(KV_HEADS):
        norms = [math.sqrt(sum(x * x for x in view.values[h, j].double().tolist())) for j in range(N)]
        group = per_head[h * GROUP : (h + 1) * GROUP]
        expected.append([sum(row[j] for row in group) / GROUP * norms[j] for j in range(N)])
    policy = ExpectedAttention(window=window, future=future, sinks=sinks)
    close(policy.score(view), expected)
    assert policy.must_keep(N).nonzero().squeeze(1).tolist() == [0, 1, 2, 3]
    assert policy.query_agnostic


def test_rotary_rotations_invert_and_average() -> None:
    rotary, x = toy_rotary(), torch.randn(2, 5, D)
    positions = torch.arange(7, 12)
    assert torch.allclose(rotary.rotate(rotary.rotate(x, positions), positions, inverse=True), x, atol=1e-5)
    one = rotary.mean_rotation(torch.tensor([9]), D)
    assert torch.allclose(x[:, 2:3] @ one.T, rotary.rotate(x[:, 2:3], torch.tensor([9])), atol=1e-5)


def kvzip_view(span: tuple[int, int], repeat: int, seed: int = 0) -> ReconstructionView:
    generator = torch.Generator().manual_seed(seed)
    length = N + repeat
    keys = torch.randn(KV_HEADS, length, D, generator=generator)
    queries = torch.randn(KV_HEADS * GROUP, repeat, D, generator=generator)
    return ReconstructionView(keys, queries, span, N)


@pytest.mark.parametrize(
    ("span", "sinks", "attend"),
    [((10, 25), 4, "span"), ((0, 12), 4, "span"), ((30, 40), 0, "span"), ((10, 25), 4, "context")],
)
@pytest.mark.parametrize(("query_block", "fused"), [(128, True), (128, False), (4, True), (4, False)])
def test_kvzip_scores_a_span_by_the_most_attention_its_repeat_pays_it(
    span: tuple[int, int],
    sinks: int,
    attend: str,
    query_block: int,
    fused: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Each repeat query's softmax over what it may attend (the sinks and the span, or the whole context),
    then the repeat up to itself; a span token's score is the most any query of the group gives it (the
    same when the queries are scored a few at a time, and with or without torch's fused kernel)."""
    monkeypatch.setattr(reconstruction, "QUERY_BLOCK", query_block)
    monkeypatch.setattr(reconstruction, "FUSED_LOG_SUM_EXP", fused)
    repeat = 9
    view = kvzip_view(span, repeat)
    start, end = span
    used_sinks = min(sinks, start) if attend == "span" else start  # context columns before the span
    expected = []
    for h in range(KV_HEADS):
        best = [0.0] * (end - start)
        for g in range(GROUP):
            for i in range(repeat):
                q = view.queries[h * GROUP + g, i].double().tolist()
                attended = range(N) if attend == "context" else [*range(used_sinks), *range(start, end)]
                columns = [*attended, *range(N, N + i + 1)]
                logits = [
                    sum(a * b for a, b in zip(q, view.keys[h, j].double().tolist(), strict=True))
                    / math.sqrt(D)
                    for j in columns
                ]
                top = max(logits)
                weights = [math.exp(x - top) for x in logits]
                span_weights = [w / sum(weights) for w in weights[used_sinks : used_sinks + end - start]]
                best = [max(a, b) for a, b in zip(best, span_weights, strict=True)]
        expected.append(best)
    close(KVzip(sinks=sinks, attend=attend).pass_scores(view), expected)


def test_kvzip_pools_chunks_by_their_best_token_and_keeps_its_sinks() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.2, 0.3, 0.05, 0.4, 0.0]])
    assert torch.equal(chunk_max(scores, 3), scores[:, [1, 1, 1, 5, 5, 5, 6]])
    own = [torch.rand(2, 20) for _ in range(5)]
    pooled = KVzip(chunk=4).across_layers(own)
    assert all(torch.equal(p[:, :4].amax(-1, keepdim=True).expand(-1, 4), p[:, :4]) for p in pooled)
    shared = KVzip(layers="shared", vote_from=0.4).across_layers(own)
    assert all(torch.equal(layer, shared[0]) for layer in shared)
    assert KVzip(sinks=3).must_keep(10).nonzero().squeeze(1).tolist() == [0, 1, 2]
    with pytest.raises(registry.PolicyError, match="chunk >= 1"):
        registry.create("kvzip", chunk=0)
    with pytest.raises(registry.PolicyError, match="attend must be 'span' or 'context'"):
        registry.create("kvzip", attend="all")


def test_random_is_reproducible_per_seed() -> None:
    view = random_view(window=0)
    assert torch.equal(RandomEviction(seed=3).score(view), RandomEviction(seed=3).score(view))
    assert not torch.equal(RandomEviction(seed=3).score(view), RandomEviction(seed=4).score(view))


def test_keep_indices_are_the_top_scores_in_position_order() -> None:
    scores = torch.tensor([[0.1, 0.9, 0.3, INF, 0.5], [5.0, 4.0, 3.0, 2.0, 1.0]])
    assert keep_indices(scores, 3).tolist() == [[1, 3, 4], [0, 1, 2]]
    assert keep_indices(scores, 9).tolist() == [[0, 1, 2, 3, 4]] * 2


def test_must_keep_tokens_are_kept_whatever_their_scores_and_ties() -> None:
    """The mask wins over scores (even -inf or tied ones); the rest is ranked by score."""
    scores = torch.tensor([[0.0, 0.0, 0.0, 0.0, 0.0, 0.0], [-INF, 1.0, 9.0, 0.0, 8.0, -INF]])
    must = torch.tensor([True, False, False, False, False, True])
    assert keep_indices(scores, 3, must).tolist()[1] == [0, 2, 5]
    assert keep_indices(scores, 2, must).tolist() == [[0, 5], [0, 5]]
    with pytest.raises(ValueError, match="cannot hold the 2 that must be kept"):
        keep_indices(scores, 1, must)


@pytest.mark.parametrize(
    ("length", "ratio", "must", "block", "kept"),
    [(100, 0.75, 0, 1, 25), (100, 0.75, 0, 32, 32), (100, 0.75, 40, 32, 64), (100, 0.0, 0, 32, 100),
     (20, 0.9, 0, 32, 20), (100, 0.99, 32, 16, 32)],
)  # fmt: skip
def test_kept_tokens_hold_the_must_keep_ones_and_fill_the_last_block(
    length: int, ratio: float, must: int, block: int, kept: int
) -> None:
    """A compaction that would free no more blocks keeps the slots it holds anyway; never below the mask."""
    assert kept_tokens(length, ratio, must, block) == kept


@pytest.mark.parametrize(
    ("length", "ratio", "must", "kept"), [(6000, 0.875, 4, 768), (6000, 0.75, 4, 1504), (100, 0.1, 0, 96),
                                          (31, 0.5, 0, 0), (100, 0.99, 4, 32)]
)  # fmt: skip
def test_a_context_cache_keeps_whole_blocks_inside_the_context(
    length: int, ratio: float, must: int, kept: int
) -> None:
    assert cached_tokens(length, ratio, must, 32) == kept


@pytest.mark.parametrize(
    ("length", "ratio", "kept"), [(100, 0.0, 100), (100, 0.75, 25), (10, 0.875, 2), (3, 0.99, 1)]
)
def test_ratio_is_the_evicted_fraction(length: int, ratio: float, kept: int) -> None:
    assert kept_count(length, ratio) == kept


def test_pyramid_budgets_shrink_upwards_and_keep_the_uniform_total() -> None:
    budgets = pyramid_budgets(length=4000, ratio=0.75, layers=30)
    uniform = uniform_budgets(4000, 0.75, 30)
    assert budgets == sorted(budgets, reverse=True) and budgets[0] > uniform[0] > budgets[-1]
    assert budgets[-1] == round(1000 / 20)
    assert abs(sum(budgets) - sum(uniform)) <= 30
    assert max(pyramid_budgets(length=100, ratio=0.1, layers=8)) <= 100


def test_registry_lists_every_policy_with_its_options() -> None:
    described = {entry["name"]: entry for entry in registry.describe()}
    assert set(described) == {"none", "streaming_llm", "snapkv", "chunkkv", "h2o", "tova", "knorm", "random",
                              "expected_attention", "kvzip"}  # fmt: skip
    assert described["snapkv"]["options"] == {"window": 32, "kernel": 5}
    assert "SnapKV" in described["snapkv"]["description"]


def test_registry_creates_with_options_and_explains_mistakes() -> None:
    assert registry.create("snapkv", window=8, kernel=None) == SnapKV(window=8)
    with pytest.raises(
        registry.PolicyError, match=r"Unknown KV policy 'snap'; available: chunkkv, expected_attention"
    ):
        registry.create("snap")
    with pytest.raises(registry.PolicyError, match=r"has no option sinks; its options: window, kernel"):
        registry.create("snapkv", sinks=4)


def test_third_party_policies_register_through_the_entry_point_group(monkeypatch: pytest.MonkeyPatch) -> None:
    class FirstTokens(Policy):
        name = "first_tokens"

        def score(self, view: LayerView) -> torch.Tensor:
            return -torch.arange(view.length, dtype=torch.float32).expand(view.kv_heads, -1)

    class Entry:
        name = "first_tokens"

        def load(self) -> type[Policy]:
            return FirstTokens

    monkeypatch.setattr(
        registry, "entry_points", lambda group: [Entry()] if group == "lcrag.kv_policies" else []
    )
    registry.policies.cache_clear()
    try:
        assert isinstance(registry.create("first_tokens"), FirstTokens)
    finally:
        registry.policies.cache_clear()


@pytest.mark.parametrize("name", sorted(set(registry.policies()) - {"kvzip"}))  # kvzip: reconstruction passes
@pytest.mark.parametrize("length", [1, 3, 40])
def test_every_policy_scores_prompts_shorter_than_its_window(name: str, length: int) -> None:
    """Short prompts reach the engine too (a 3-token chat); scoring must not fail on them."""
    policy = registry.create(name)
    torch.manual_seed(length)
    needed = policy.queries_needed()
    window = length if needed is None else min(needed, length)
    view = LayerView(torch.randn(2, length, 16), torch.randn(2, length, 16), torch.randn(4, window, 16))
    scores = policy.score(view)
    assert scores.shape == (2, length) and not scores.isnan().any()
    kept = kept_tokens(length, 0.5, policy.must_keep_count(length))
    assert keep_indices(scores, kept, policy.must_keep(length)).shape == (2, kept)
