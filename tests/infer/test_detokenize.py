"""Output text piece by piece: whole characters only, cut at stop strings that never leak."""

import pytest
from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

from scratchlm.infer.detokenize import OutputText
from scratchlm.tokenizer import BOS, train_tokenizer

from conftest import WORDS


@pytest.fixture(scope="module")
def tokenizer():
    return train_tokenizer([" ".join(WORDS)] * 20, 300)


def pieces(tokenizer, text: str, stop: list[str], prompt: str = "the") -> tuple[list[str], OutputText, str | None]:
    out = OutputText(tokenizer.tok, tokenizer.encode(prompt, bos=True), stop)
    got, found = [], None
    for token in tokenizer.encode(text):
        found = out.add(token)
        got.append(out.take(finished=found is not None))
        if found:
            break
    if not found:
        out.finish()
        got.append(out.take(finished=True))
    return got, out, found


def test_pieces_never_split_a_character_and_add_up_to_the_text(tokenizer):
    text = " héllo wörld 日本語 🙂 done"
    got, _, _ = pieces(tokenizer, text, [])
    assert "".join(got) == text and all("\ufffd" not in p for p in got)
    assert len([p for p in got if p]) > 3  # it streams, not all at the end


def test_a_leading_space_survives_because_decoding_starts_in_the_prompt():
    """A SentencePiece-style decoder (Llama 2's) drops the space of a text's first word: the first output
    token must be decoded after some prompt tokens, as it stands in the text."""
    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Metaspace()
    tok.decoder = decoders.Metaspace()
    tok.train_from_iterator([" ".join(WORDS)] * 5, trainers.BpeTrainer(vocab_size=120, special_tokens=["<unk>"]))
    prompt, output = tok.encode("the").ids, tok.encode("cat sat").ids
    for context, want in ((prompt, " cat sat"), ([], "cat sat")):
        out = OutputText(tok, context, [])
        for token in output:
            out.add(token)
        assert out.take(finished=True) == want


def test_stop_string_across_tokens_cuts_the_text_and_never_leaks(tokenizer):
    text = " the cat sat on a mat and then ran"
    got, out, found = pieces(tokenizer, text, ["t on a m", "zzz"])
    assert found == "t on a m" and out.text == " the cat sa" and "".join(got) == " the cat sa"
    assert all("t on" not in p for p in got)


def test_the_tail_that_may_start_a_stop_string_is_held_until_it_cannot(tokenizer):
    out = OutputText(tokenizer.tok, [], ["cat!"])
    shown = ""
    for token in tokenizer.encode(" the cat sat"):
        out.add(token)
        shown += out.take(finished=False)
        assert len(out.text) - len(shown) <= 3  # len("cat!") - 1 held back at most
    out.finish()
    assert shown + out.take(finished=True) == " the cat sat"


def test_special_tokens_are_kept_or_skipped(tokenizer):
    ids = tokenizer.encode(" cat") + [tokenizer.token_id(BOS)] + tokenizer.encode(" sat")
    for skip, want in ((False, f" cat{BOS} sat"), (True, " cat sat")):
        out = OutputText(tokenizer.tok, [], [], skip_special=skip)
        for token in ids:
            out.add(token)
        out.finish()
        assert out.take(finished=True) == want
