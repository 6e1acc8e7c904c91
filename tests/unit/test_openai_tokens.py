import hashlib
from pathlib import Path

import pytest
import tiktoken

from embedserve.engine.openai_tokens import OpenAITokenDecoder, prepare_tiktoken_cache
from embedserve.errors import InvalidInput

TEXTS = ["hello world", "naïve café 東京 🙂", "def f(x):\n    return x", ""]


def test_cache_is_prepared_offline_and_verified(tmp_cache: Path) -> None:
    folder = prepare_tiktoken_cache(tmp_cache)
    (data,) = list(folder.iterdir())
    assert hashlib.sha256(data.read_bytes()).hexdigest().startswith("223921b7")
    data.write_bytes(b"corrupt")  # a damaged cache is rebuilt, not trusted
    prepare_tiktoken_cache(tmp_cache)
    assert hashlib.sha256(data.read_bytes()).hexdigest().startswith("223921b7")


def test_decodes_what_tiktoken_encodes() -> None:
    decoder = OpenAITokenDecoder()
    encoding = tiktoken.get_encoding("cl100k_base")
    ids = [encoding.encode(t) for t in TEXTS]
    assert decoder.decode(ids, range(len(ids))) == TEXTS
    assert ids[0] == [15339, 1917]  # the real cl100k_base ranks


def test_the_encoding_is_tiktokens_own_and_touches_no_cache(  # type: ignore[no-untyped-def]
    tmp_path: Path, monkeypatch
) -> None:
    """Made in memory from the packaged data: the server writes no tiktoken cache anywhere."""
    from embedserve.engine.openai_tokens import cl100k

    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "never"))
    cl100k.cache_clear()
    ours = cl100k()
    assert not (tmp_path / "never").exists()
    monkeypatch.undo()
    theirs = tiktoken.get_encoding("cl100k_base")
    texts = [*TEXTS, "<|endoftext|> and  spaces\n\n\tTabs 12345 ÜBER", "x" * 300]
    for text in texts:
        assert ours.encode(text, allowed_special="all") == theirs.encode(
            text, allowed_special="all"
        )
    assert ours.n_vocab == theirs.n_vocab


@pytest.mark.parametrize("bad", [-1, 100256, 100261, 100277, 10**30])
def test_out_of_range_ids_are_refused(bad: int) -> None:
    with pytest.raises(InvalidInput, match=rf"input\[7\] holds token id {bad}"):
        OpenAITokenDecoder().decode([[15339, bad]], [7])


def test_special_token_ids_decode() -> None:
    assert OpenAITokenDecoder().decode([[100257]], [0]) == ["<|endoftext|>"]
