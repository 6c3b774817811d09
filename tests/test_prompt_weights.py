"""Riffusion's weighted prompts, against an independent implementation of the same maths.

The reference below is written from Riffusion 0.0.5's ``riffusion/external/prompt_weighting.py``
(diffusers' long-prompt-weighting community code) the way that code is built — one regular
expression over the whole prompt, weights padded per chunk, chunks sliced out of one long id
list — so it shares no code with ``riffradio.engine.prompt_weights`` (a character scanner) or
the engine. On the tiny model a weighted riff must give the latents that diffusers' stock
img2img gives with the reference embedding, as the unweighted riff does with the stock prompt.
"""

from __future__ import annotations

import dataclasses
import logging
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from riffradio.core.knobs import check_text
from riffradio.core.types import RiffRequest
from riffradio.engine.pipeline import RiffEngine
from riffradio.engine.prompt_weights import parse_prompt_weights
from tests.stock_img2img import stock_img2img_latents

STEPS = 3

_REFERENCE_TOKENS = re.compile(
    r"\\\(|\\\)|\\\[|\\]|\\\\|\\|\(|\[|:([+-]?[.\d]+)\)|\)|]|[^\\()\[\]:]+|:",
)


def reference_parse(text: str) -> list[tuple[str, float]]:
    """Riffusion's ``parse_prompt_attention``: one regex, bracket stacks, equal neighbours merged."""
    res: list[list] = []
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for entry in res[start:]:
            entry[1] *= factor

    for match in _REFERENCE_TOKENS.finditer(text):
        token, weight = match.group(0), match.group(1)
        if token.startswith("\\"):
            res.append([token[1:], 1.0])
        elif token == "(":
            round_open.append(len(res))
        elif token == "[":
            square_open.append(len(res))
        elif weight is not None and round_open:
            multiply(round_open.pop(), float(weight))
        elif token == ")" and round_open:
            multiply(round_open.pop(), 1.1)
        elif token == "]" and square_open:
            multiply(square_open.pop(), 1 / 1.1)
        else:
            res.append([token, 1.0])
    for start in round_open:
        multiply(start, 1.1)
    for start in square_open:
        multiply(start, 1 / 1.1)
    if not res:
        res = [["", 1.0]]
    merged = [res[0]]
    for entry in res[1:]:
        if entry[1] == merged[-1][1]:
            merged[-1] = [merged[-1][0] + entry[0], entry[1]]
        else:
            merged.append(entry)
    return [(text, weight) for text, weight in merged]


def reference_embedding(model, prompt: str, chunks: int | None = None) -> torch.Tensor:
    """Riffusion's ``get_weighted_text_embeddings(..., max_embeddings_multiples=3, no_boseos_middle=False)``."""
    tokenizer, encoder = model.tokenizer, model.text_encoder
    ids: list[int] = []
    weights: list[float] = []
    for text, weight in reference_parse(prompt):
        token = tokenizer(text).input_ids[1:-1]
        ids += token
        weights += [weight] * len(token)
        if len(ids) > 225:
            break
    ids, weights = ids[:225], weights[:225]
    multiples = chunks or max(1, min(3, (len(ids) - 1) // 75 + 1))
    length = 75 * multiples + 2
    bos, eos = tokenizer.bos_token_id, tokenizer.eos_token_id
    full = torch.tensor([[bos] + ids + [eos] * (length - 1 - len(ids))])
    padded_weights: list[float] = []
    if not weights:
        padded_weights = [1.0] * (77 * multiples)
    else:
        for j in range(multiples):
            padded_weights += [1.0] + weights[j * 75 : min(len(weights), (j + 1) * 75)] + [1.0]
        padded_weights += [1.0] * (77 * multiples - len(padded_weights))
    if multiples > 1:
        parts = []
        for j in range(multiples):
            piece = full[:, j * 75 : (j + 1) * 75 + 2].clone()
            piece[:, 0], piece[:, -1] = full[0, 0], full[0, -1]
            parts.append(encoder(piece)[0])
        embedding = torch.concat(parts, axis=1)
    else:
        embedding = encoder(full)[0]
    w = torch.tensor([padded_weights], dtype=embedding.dtype)
    previous = embedding.float().mean(axis=[-2, -1]).to(embedding.dtype)
    embedding = embedding * w.unsqueeze(-1)
    current = embedding.float().mean(axis=[-2, -1]).to(embedding.dtype)
    return embedding * (previous / current).unsqueeze(-1).unsqueeze(-1)


# -- the parser ------------------------------------------------------------------------------------


def test_the_documented_examples() -> None:
    assert parse_prompt_weights("normal text") == [("normal text", 1.0)]
    assert parse_prompt_weights("(saxophone:1.4) jazz") == [("saxophone", 1.4), (" jazz", 1.0)]
    assert parse_prompt_weights("[quiet] piano") == [("quiet", 1 / 1.1), (" piano", 1.0)]
    assert parse_prompt_weights("(unbalanced") == [("unbalanced", 1.1)]
    assert parse_prompt_weights(r"\(literal\]") == [("(literal]", 1.0)]
    assert parse_prompt_weights("(unnecessary)(parens)") == [("unnecessaryparens", 1.1)]
    assert parse_prompt_weights("a (((house:1.3)) [on] a (hill:0.5), sun, (((sky))).") == [
        ("a ", 1.0), ("house", 1.5730000000000004), (" ", 1.1), ("on", 1.0), (" a ", 1.1),
        ("hill", 0.55), (", sun, ", 1.1), ("sky", 1.4641000000000006), (".", 1.1),
    ]  # fmt: skip


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet="ab (:)[]\\1.5-+", max_size=40))
def test_the_parser_is_riffusions_on_any_prompt(prompt: str) -> None:
    try:
        expected = reference_parse(prompt)
    except ValueError:  # Riffusion fails on "(a:1.5.5)": riffradio reads it, see the next test
        assert parse_prompt_weights(prompt)
        return
    assert parse_prompt_weights(prompt) == expected


def test_what_riffusion_cannot_parse_still_parses() -> None:
    with pytest.raises(ValueError):
        reference_parse("(sax:1.2.3) jazz")
    assert parse_prompt_weights("(sax:1.2.3) jazz") == [("sax:1.2.3", 1.1), (" jazz", 1.0)]
    assert parse_prompt_weights("(sax:.)") == [("sax:.", 1.1)]
    assert parse_prompt_weights(":1.3) no bracket open") == [(":1.3) no bracket open", 1.0)]


# -- the engine on the tiny model ----------------------------------------------------------------


@pytest.fixture(scope="module")
def engine(tiny_model_dir: Path) -> RiffEngine:
    return RiffEngine.load(str(tiny_model_dir), device="cpu")


def _request(prompt: str, **changes: object) -> RiffRequest:
    base = RiffRequest(prompt, prompt, 11, 11, alpha=0.0, start_guidance=7.5, end_guidance=7.5,
                       num_inference_steps=STEPS, seed_image="og_beat")  # fmt: skip
    return dataclasses.replace(base, **changes)


def _stock_latents(engine: RiffEngine, prompt_embeds: torch.Tensor, negative_embeds: torch.Tensor) -> torch.Tensor:
    """diffusers' stock img2img with given embeddings: Riffusion's riff at alpha 0."""
    return stock_img2img_latents(engine.model, 11, STEPS, prompt_embeds=prompt_embeds, negative_prompt_embeds=negative_embeds)


def _plain_embedding(engine: RiffEngine, text: str) -> torch.Tensor:
    """The embedding riffradio used before weights: the tokenizer's padding, 77 tokens."""
    tokenizer = engine.model.tokenizer
    ids = tokenizer(text, padding="max_length", max_length=77, truncation=True, return_tensors="pt").input_ids
    with torch.inference_mode():
        return engine.model.text_encoder(ids)[0]


def test_unweighted_prompts_embed_as_before(engine: RiffEngine) -> None:
    with torch.inference_mode():
        for text in ("jazzy lofi hip hop", "", "a: b, c"):
            assert torch.equal(engine._embed_text(text), _plain_embedding(engine, text))
            assert torch.equal(engine._embed_text(text), reference_embedding(engine.model, text))


@pytest.mark.parametrize(
    "prompt",
    [
        "(saxophone:1.4) jazz",
        "[[quiet]] piano, (drums)",
        # 2 chunks on the tiny model's byte-level tokenizer (one token per character)
        "(" + "x" * 70 + ":1.2) lofi hip hop beat with a deep bass line, [vinyl crackle], (saxophone:1.3)",
    ],
)
def test_a_weighted_riff_is_riffusions(engine: RiffEngine, prompt: str) -> None:
    result = engine.riff(_request(prompt))
    with torch.inference_mode():
        weighted = reference_embedding(engine.model, prompt)
        chunks = weighted.shape[1] // 77
        # Riffusion's riffuse pairs a one-chunk prompt with its 77-token "" embedding (and fails
        # on longer prompts); riffradio pads "" to the prompt's chunks, as the community code does
        negative = reference_embedding(engine.model, "", chunks)
        expected = _stock_latents(engine, weighted, negative)
    assert torch.equal(result.latents, expected)
    # ...and the weights matter: the same words unweighted give another riff
    words = "".join(text for text, _ in parse_prompt_weights(prompt))
    assert not torch.equal(engine.riff(_request(words)).latents, result.latents)


def test_riffs_of_different_lengths_batch_as_they_run_alone(engine: RiffEngine) -> None:
    """A riff's embeddings have its own longest prompt's chunks, whatever it is batched with."""
    long_prompt = "(" + "y" * 80 + ":1.1) ambient"  # 2 chunks
    requests = [
        _request("(saxophone:1.4) jazz", num_inference_steps=2),
        _request(long_prompt, num_inference_steps=2),
        _request("church bells", end_prompt=long_prompt, alpha=0.5, num_inference_steps=2),
    ]
    batch_sizes: list[int] = []
    hook = engine.model.unet.register_forward_hook(lambda module, args, output: batch_sizes.append(args[0].shape[0]))
    engine.max_batch_size = 3
    try:
        batched = engine.riff_batch(requests)
    finally:
        engine.max_batch_size = 1
        hook.remove()
    assert sorted(batch_sizes) == [2] * 2 + [4] * 2  # the two 2-chunk riffs share a UNet batch
    for request, result in zip(requests, batched):
        torch.testing.assert_close(result.latents, engine.riff(request).latents, rtol=1e-4, atol=1e-4)


def test_every_prompt_the_station_accepts_makes_a_riff(engine: RiffEngine, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.WARNING)
    longest = "(bass:1.5) " + "ab " * 330  # 1001 characters: one too many
    with pytest.raises(ValueError, match="1001 characters"):
        check_text("prompt", longest)
    accepted = longest[:1000]
    check_text("prompt", accepted)
    for prompt in (accepted, "(sax:1.2.3) jazz", "((((((", "]]]:)", "(loud:99999999999999999999999999999999999999999999)"):
        result = engine.riff(_request(prompt, num_inference_steps=2))
        assert result.latents is not None and torch.isfinite(result.latents).all(), prompt
        assert np.asarray(result.image).std() > 0
    assert any("longer than 225 tokens" in record.getMessage() for record in caplog.records)
