"""Riffusion's weighted prompts: ``(saxophone:1.3)``, ``(louder)``, ``[quieter]``, up to 3 chunks.

Riffusion's ``riffuse`` embeds every prompt through the weighted-prompt code it took from
diffusers' "long prompt weighting" community pipeline. The syntax, as that parser reads it:

* ``(text)`` multiplies the weight of ``text`` by 1.1, ``[text]`` divides it by 1.1; brackets nest
  and multiply (``((text))`` = 1.21);
* ``(text:1.4)`` multiplies it by 1.4 (any decimal number, also ``0.5`` or ``-1``);
* ``\\(``, ``\\)``, ``\\[``, ``\\]``, ``\\\\`` are the literal characters; a lone backslash is dropped;
* a bracket never closed applies to the rest of the prompt, a closing bracket never opened is
  a literal character, ``:`` outside ``(…:number)`` is a literal character.

Every prompt parses: Riffusion's own code fails only on a weight that is not a number although it
looks like one (``(sax:1.2.3)``, ``(sax:.)``); here ``:1.2.3`` is then read as words and the bracket
as a plain ``( )``.

Each fragment is tokenised on its own, BOS and EOS dropped; fragments of equal weight are joined
first (so ``(a)(b)`` reads as ``ab``). The text tokens fill chunks of 75 (CLIP's 77 minus BOS and
EOS), at most 3 (225 tokens; the rest is cut, with a warning). Pure functions; the text encoder
runs in :meth:`riffradio.engine.pipeline.RiffEngine._embed_text`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

ROUND_MULTIPLIER = 1.1
SQUARE_MULTIPLIER = 1 / 1.1
CHUNK_TEXT_TOKENS = 75  # CLIP's 77 positions minus BOS and EOS
MAX_CHUNKS = 3  # Riffusion's max_embeddings_multiples

_ESCAPED = {"(": "(", ")": ")", "[": "[", "]": "]", "\\": "\\"}
_PLAIN_TEXT = re.compile(r"[^\\()\[\]:]+")
_WEIGHT = re.compile(r":([+-]?[.\d]+)\)")


def parse_prompt_weights(prompt: str) -> list[tuple[str, float]]:
    """``prompt`` as (text, weight) fragments, neighbours of equal weight joined.

    >>> parse_prompt_weights("an (important) word")
    [('an ', 1.0), ('important', 1.1), (' word', 1.0)]
    >>> parse_prompt_weights("(saxophone:1.4) jazz")
    [('saxophone', 1.4), (' jazz', 1.0)]
    """
    fragments: list[list[str | float]] = []  # [text, weight], weights multiplied in place
    open_round: list[int] = []  # index of the first fragment inside each open bracket
    open_square: list[int] = []

    def scale_from(first: int, multiplier: float) -> None:
        for fragment in fragments[first:]:
            fragment[1] = float(fragment[1]) * multiplier

    position = 0
    while position < len(prompt):
        char = prompt[position]
        if char == "\\":
            following = prompt[position + 1 : position + 2]
            if following in _ESCAPED:
                fragments.append([_ESCAPED[following], 1.0])
                position += 2
            else:
                fragments.append(["", 1.0])  # a lone backslash: nothing
                position += 1
        elif char == "(":
            open_round.append(len(fragments))
            position += 1
        elif char == "[":
            open_square.append(len(fragments))
            position += 1
        elif char == ")":
            if open_round:
                scale_from(open_round.pop(), ROUND_MULTIPLIER)
            else:
                fragments.append([")", 1.0])
            position += 1
        elif char == "]":
            if open_square:
                scale_from(open_square.pop(), SQUARE_MULTIPLIER)
            else:
                fragments.append(["]", 1.0])
            position += 1
        elif char == ":":
            weighted = _WEIGHT.match(prompt, position)
            if weighted is None:
                fragments.append([":", 1.0])
                position += 1
            elif not open_round:
                fragments.append([weighted.group(0), 1.0])  # nothing to weight: literal text
                position = weighted.end()
            else:
                try:
                    weight = float(weighted.group(1))
                except ValueError:  # "1.2.3": words, and the ")" closes a plain bracket
                    fragments.append([":" + weighted.group(1), 1.0])
                    position = weighted.end() - 1
                    continue
                scale_from(open_round.pop(), weight)
                position = weighted.end()
        else:
            text = _PLAIN_TEXT.match(prompt, position)
            assert text is not None  # every other character starts a run of plain text
            fragments.append([text.group(0), 1.0])
            position = text.end()
    # Brackets left open weight the rest: every round one, then every square one, as Riffusion does.
    for first in open_round:
        scale_from(first, ROUND_MULTIPLIER)
    for first in open_square:
        scale_from(first, SQUARE_MULTIPLIER)
    joined: list[tuple[str, float]] = []
    for text, weight in fragments or [["", 1.0]]:
        if joined and joined[-1][1] == weight:
            joined[-1] = (joined[-1][0] + str(text), float(weight))
        else:
            joined.append((str(text), float(weight)))
    return joined


@dataclass(frozen=True)
class WeightedTokens:
    """A prompt's text tokens (BOS/EOS not included) and the weight of each.

    Attributes:
        token_ids: at most ``MAX_CHUNKS * CHUNK_TEXT_TOKENS`` ids.
        weights: one weight per id.
        truncated: the prompt had more tokens than that; the rest was cut.
    """

    token_ids: tuple[int, ...]
    weights: tuple[float, ...]
    truncated: bool = False

    @property
    def chunks(self) -> int:
        """How many 77-token chunks its embedding needs (1–``MAX_CHUNKS``)."""
        return chunks_for(len(self.token_ids))

    @property
    def is_weighted(self) -> bool:
        return any(weight != 1.0 for weight in self.weights)


def chunks_for(text_tokens: int) -> int:
    """77-token chunks that hold ``text_tokens`` text tokens (at least 1, at most ``MAX_CHUNKS``)."""
    return max(1, min(MAX_CHUNKS, (text_tokens - 1) // CHUNK_TEXT_TOKENS + 1))


def weighted_tokens(prompt: str, tokenize: Callable[[str], Sequence[int]]) -> WeightedTokens:
    """Parse ``prompt`` and tokenise each fragment with ``tokenize`` (ids *with* BOS and EOS).

    Stops at ``MAX_CHUNKS * CHUNK_TEXT_TOKENS`` tokens (``truncated`` then says so).
    """
    most = MAX_CHUNKS * CHUNK_TEXT_TOKENS
    token_ids: list[int] = []
    weights: list[float] = []
    for text, weight in parse_prompt_weights(prompt):
        ids = list(tokenize(text))[1:-1]
        token_ids += ids
        weights += [weight] * len(ids)
        if len(token_ids) > most:
            break
    truncated = len(token_ids) > most
    return WeightedTokens(tuple(token_ids[:most]), tuple(weights[:most]), truncated)


def chunk_token_ids(tokens: WeightedTokens, chunks: int, bos_id: int, eos_id: int) -> list[list[int]]:
    """The encoder inputs: ``chunks`` lists of 77 ids, each BOS + 75 text/EOS-padding ids + EOS.

    The text runs on from chunk to chunk (75 tokens each); after it comes EOS padding, so a
    prompt padded to more chunks than it needs has chunks of only padding.
    """
    if chunks < tokens.chunks:
        raise ValueError(f"{len(tokens.token_ids)} text tokens need {tokens.chunks} chunks, not {chunks}")
    padded = list(tokens.token_ids) + [eos_id] * (chunks * CHUNK_TEXT_TOKENS - len(tokens.token_ids))
    return [
        [bos_id] + padded[index * CHUNK_TEXT_TOKENS : (index + 1) * CHUNK_TEXT_TOKENS] + [eos_id]
        for index in range(chunks)
    ]


def position_weights(tokens: WeightedTokens, chunks: int) -> list[float]:
    """Weight of each of the ``chunks * 77`` embedding positions: the token's, 1.0 for BOS/EOS/padding."""
    weights = list(tokens.weights) + [1.0] * (chunks * CHUNK_TEXT_TOKENS - len(tokens.weights))
    out: list[float] = []
    for index in range(chunks):
        out += [1.0] + weights[index * CHUNK_TEXT_TOKENS : (index + 1) * CHUNK_TEXT_TOKENS] + [1.0]
    return out
