"""A sequence's output text, a piece per token, cut at the first stop string.

Text grows through tokenizers' own incremental decoder (DecodeStream), which holds a token back while
it ends in an unfinished UTF-8 character (a byte-level token can carry part of one) and starts from a
few prompt tokens, so the first piece decodes as it would in context (a leading space kept).

Stop strings may span tokens ("\\n\\n" from two "\\n"), so they are searched in the text, not in
token ids. Until the sequence ends, the last len(longest stop) - 1 characters are held back: they may
still turn out to be the start of a stop string, which must never reach the reader.
"""

from __future__ import annotations

from collections.abc import Sequence

from tokenizers import Tokenizer
from tokenizers.decoders import DecodeStream

PROMPT_CONTEXT = 4  # prompt tokens the decoder starts from


class OutputText:
    def __init__(self, tokenizer: Tokenizer, prompt: list[int], stop: Sequence[str], skip_special: bool = False
                 ) -> None:
        self.tokenizer = tokenizer
        self.skip_special = skip_special
        self.stream = DecodeStream(ids=prompt[-PROMPT_CONTEXT:], skip_special_tokens=skip_special)
        self.stop = stop
        self.hold = max((len(s) for s in stop), default=1) - 1
        self.text = ""
        self.sent = 0  # characters handed out by take()
        self.undecoded: list[int] = []  # tokens the decoder holds: an unfinished character

    def add(self, token: int) -> str | None:
        """Append one token's text. Returns the stop string it completed, if any; the text then ends
        just before that string."""
        piece = self.stream.step(self.tokenizer, token)
        if piece is None:
            self.undecoded.append(token)
            return None
        self.undecoded.clear()
        start = max(0, len(self.text) - self.hold)  # a new match ends in the new piece
        self.text += piece
        found = [(i, s) for s in self.stop if (i := self.text.find(s, start)) >= 0]
        if not found:
            return None
        index, stop = min(found)
        self.text = self.text[:index]
        return stop

    def finish(self) -> None:
        """The sequence ended: keep the bytes of an unfinished character (as replacement characters)."""
        if self.undecoded:
            self.text += self.tokenizer.decode(self.undecoded, skip_special_tokens=self.skip_special)
            self.undecoded.clear()

    def take(self, finished: bool) -> str:
        """The text not handed out yet; while running, less the tail that may start a stop string."""
        end = len(self.text) if finished else max(self.sent, len(self.text) - self.hold)
        piece, self.sent = self.text[self.sent:end], end
        return piece
