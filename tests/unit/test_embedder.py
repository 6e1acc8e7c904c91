import numpy as np
import pytest

from embedserve.engine.embedder import EmbedOptions
from embedserve.errors import InvalidInput
from embedserve.models.source import ModelSource
from tests.fakes import EchoBackend, batch_limits, fake_embedder


async def test_vectors_come_back_in_input_order(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="native")
    lengths = (9, 1, 5, 3, 8, 2, 7)
    result = await embedder.embed([[7] * n for n in lengths])
    sizes = result.vectors[:, 0] / result.vectors[:, 3]  # the echo of each sequence's length
    assert np.allclose(sizes, [n + 2 for n in lengths])
    assert result.prompt_tokens == sum(n + 2 for n in lengths)


async def test_dimensions_keep_a_prefix_and_renormalize(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="native")
    full = await embedder.embed([[5, 6]])
    cut = await embedder.embed([[5, 6]], EmbedOptions(dimensions=2))
    assert cut.vectors.shape == (1, 2)
    assert np.isclose(np.linalg.norm(cut.vectors), 1.0)
    direction = full.vectors[0, :2] / np.linalg.norm(full.vectors[0, :2])
    assert np.allclose(cut.vectors[0], direction)
    assert full.prompt_tokens == 4  # [CLS] 5 6 [SEP]


async def test_unnormalized_vectors_are_the_backends_own(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="native")
    raw = await embedder.embed([[5, 6]], EmbedOptions(normalize=False, dimensions=3))
    assert raw.vectors.tolist() == [[4.0, 5.0, 101 + 5 + 6 + 102]]  # length, first id, id sum


async def test_left_truncation_keeps_the_end_of_an_input(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="native", max_tokens=8)
    ids = list(range(1000, 1020))  # 20 content tokens; 6 fit between [CLS] and [SEP]
    right = await embedder.embed([ids], EmbedOptions(normalize=False))
    left = await embedder.embed([ids], EmbedOptions(normalize=False, truncate_left=True))
    assert right.vectors[0, 1] == 1000  # the first content token kept
    assert left.vectors[0, 1] == 1014  # the last six kept
    assert right.prompt_tokens == left.prompt_tokens == 8


async def test_token_ids_can_be_refused(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="reject")
    with pytest.raises(InvalidInput, match="does not accept token-id inputs"):
        await embedder.embed([[1, 2]])
    assert (await embedder.embed(["text still works"])).vectors.shape == (1, 8)


async def test_tiktoken_ids_are_decoded_then_tokenized_by_the_model(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend())
    from_ids = await embedder.embed([[15339, 1917]])  # cl100k_base for "hello world"
    from_text = await embedder.embed(["hello world"])
    assert np.array_equal(from_ids.vectors, from_text.vectors)


async def test_tokenizing_leaves_the_event_loop_unless_it_costs_less_than_the_hop(
    minilm: ModelSource,
) -> None:
    import threading

    from embedserve.engine.embedder import INLINE_TOKENIZE_CHARS

    embedder = fake_embedder(minilm, EchoBackend())
    threads: list[int] = []
    tokenize = embedder.tokenize

    def spy(*args):  # type: ignore[no-untyped-def]
        threads.append(threading.get_ident())
        return tokenize(*args)

    embedder.tokenize = spy  # type: ignore[method-assign]
    await embedder.embed(["some text"])  # one short text: cheaper here than a thread's hop
    await embedder.embed(["word " * (INLINE_TOKENIZE_CHARS // 5 + 1)])  # a longer one
    await embedder.embed(["some text", "another"])  # several
    loop = threading.get_ident()  # this test runs on the event loop's thread
    assert threads[0] == loop
    assert len(threads) == 3
    assert loop not in threads[1:]


class TwoStreamBackend(EchoBackend):
    streams = 2

    def __init__(self) -> None:
        super().__init__()
        self.alone_passes = 0
        self.every_core_pass = self._embed_alone

    def _embed_alone(self, input_ids: np.ndarray, attention_mask: np.ndarray) -> np.ndarray:
        self.alone_passes += 1
        return self.embed(input_ids, attention_mask)


async def test_a_lone_request_runs_on_every_core_where_the_backend_can(minilm: ModelSource) -> None:
    backend = TwoStreamBackend()
    embedder = fake_embedder(minilm, backend)
    await embedder.embed(["a lone query"])
    assert backend.alone_passes == 1


async def test_coarse_widths_never_pass_the_models_longest_sequence(minilm: ModelSource) -> None:
    backend = EchoBackend()
    limits = batch_limits(coarse_widths=True)
    embedder = fake_embedder(minilm, backend, max_tokens=250, limits=limits)
    await embedder.embed(["word " * 400, "a short one"])  # truncated to 250 tokens; 6 tokens
    assert sorted(width for _, width in backend.batches) == [8, 250]  # not 256, the grid's


async def test_left_truncation_keeps_the_instruction_whole(minilm: ModelSource) -> None:
    embedder = fake_embedder(minilm, EchoBackend(), token_ids="native", max_tokens=16)
    instruction = "represent this query: "
    head = embedder.tokenizer.content_ids([instruction])[0]
    ids = list(range(1000, 1040))
    sequences = embedder.tokenize([ids], True, instruction, left=True)
    (framed,) = sequences
    assert len(framed) == 16
    assert framed[1 : 1 + len(head)] == head  # the instruction, after [CLS]
    assert framed[1 + len(head) : -1] == ids[-(14 - len(head)) :]  # the input's end
    texts = embedder.tokenize(["word " * 100 + "the end"], True, instruction, left=True)
    assert texts[0][1 : 1 + len(head)] == head
    assert embedder.tokenizer.content_ids(["the end"])[0] == texts[0][-3:-1]
