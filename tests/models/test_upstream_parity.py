"""Parity with upstream Step-Audio-2 code: the TA4 interleave, the TA4 parser and the grammar the engine decodes
with, against golden fixtures written by ``tools/make_upstream_fixtures.py`` from stepfun-ai/vllm."""

from __future__ import annotations

import dataclasses

import pytest

from a2llm_rt.models.token_layout import TINY, TA4Cursor
from tests.fixtures.upstream import upstream_fixture

MINI = "9ecabf22f542a2dd2962527a7eb9359021b3cc9f"
NEW = "484a5a5a5b478858ce8b091fbfe201c0fbaae08f"


def glyphs(lay, stream):
    m = {lay.tts_pad: "P", lay.audio_pad_id: "X"}
    return "".join(m.get(i, "a" if lay.is_audio(i) else "t") for i in stream[1:-1])


def test_fixtures_name_their_upstream_commit_and_cover_the_grid():
    mini, new = upstream_fixture("ta4_interleave.json"), upstream_fixture("ta4_interleave_new.json")
    assert mini["upstream"]["commit"] == MINI and mini["upstream"]["branch"] == "step-audio2-mini"
    assert new["upstream"]["commit"] == NEW
    lengths = {(len(c["text"]), len(c["audio_codes"])) for c in mini["cases"]}
    for t in (0, 1, 3, 4, 5, 14):
        for a in (0, 1, 3, 4, 5, 14):
            assert (t, a) in lengths
    assert any(t > -(-a // 4) for t, a in lengths)  # text runs ahead of the audio
    ids = mini["ids"]
    assert (ids["tts_start"], ids["tts_end"], ids["tts_pad"], ids["audio_pad"]) == (
        TINY.tts_start, TINY.tts_end, TINY.tts_pad, TINY.audio_pad_id)  # fmt: skip


@pytest.mark.parametrize(("name", "rule"), [("ta4_interleave.json", "step-audio2-mini"),
                                            ("ta4_interleave_new.json", "full-groups")])  # fmt: skip
def test_interleave_equals_upstream(name, rule):
    lay = dataclasses.replace(TINY, ta4_rule=rule)
    for c in upstream_fixture(name)["cases"]:
        assert lay.interleave(c["text"], c["audio_codes"]) == c["stream"], (len(c["text"]), len(c["audio_codes"]))


def test_issue_examples_and_the_default_rule():
    """The examples of issue 13 (t text, a audio, P <tts_pad>, X audio padding), from the upstream fixture."""
    by_len = {(len(c["text"]), len(c["audio_codes"])): c for c in upstream_fixture("ta4_interleave.json")["cases"]}
    assert glyphs(TINY, by_len[3, 14]["stream"]) == "taaaataaaataaaaPaa"
    assert glyphs(TINY, by_len[5, 8]["stream"]) == "taaaataaaattt"
    assert glyphs(TINY, by_len[20, 8]["stream"]) == "taaaataaaatXXXXtXXXXtXXXX" + "t" * 15
    assert TINY.ta4_rule == "step-audio2-mini"
    c = by_len[5, 8]
    assert TINY.interleave(c["text"], c["audio_codes"]) == c["stream"]


@pytest.mark.parametrize("name", ["ta4_parser.json", "ta4_parser_new.json"])
def test_split_equals_upstream_parser(name):
    fx = upstream_fixture(name)
    assert "extract" in fx["upstream"]["function"]
    for c in fx["cases"]:
        got = TINY.split(c["stream"])
        assert got.text == c["text"]
        assert [TINY.audio_offset + a for a in got.audio] == c["audio"]
        assert got.other == c["other"]


def test_split_round_trips_the_interleave_with_or_without_tts_start():
    for c in upstream_fixture("ta4_interleave.json")["cases"]:
        for stream in (c["stream"], c["stream"][1:]):
            got = TINY.split(stream)
            assert (got.text, got.audio, got.other) == (c["text"], c["audio_codes"], [])


@pytest.mark.parametrize("name", ["ta4_interleave.json", "ta4_interleave_new.json"])
def test_grammar_accepts_every_upstream_stream(name):
    for c in upstream_fixture(name)["cases"]:
        cur = TINY.ta4_check(c["stream"][:-1])
        assert "stop" in TINY.ta4_allowed(cur)
        assert TINY.ta4_check(c["stream"][:-1] + [TINY.eot]).ended


@pytest.mark.parametrize(
    ("glyph", "why"),
    [
        ("taaaaa", "five audio codes in one group"),
        ("taaXa", "a real code after the padding code"),
        ("taaaatta", "audio after a text-only group"),
        ("Pt", "text after <tts_pad>"),
        ("tP", "a <tts_pad> group without audio"),
        ("taaaaPaXa", "a real code after padding in a <tts_pad> group"),
        ("taaaaPXa", "a <tts_pad> group opening with padding"),
        ("taaaaXaaat", "a real code after a padded group"),
    ],
)
def test_grammar_rejects_broken_streams(glyph, why):
    lay = TINY
    m = {"t": 10, "a": lay.audio_id(5), "P": lay.tts_pad, "X": lay.audio_pad_id}
    ids = [m.get(g, lay.audio_id(7)) for g in glyph]
    with pytest.raises(ValueError, match="breaks the TA4 interleave"):
        lay.ta4_check(ids)


def test_min_audio_removes_the_ways_to_end_the_audio():
    lay = TINY
    cur = lay.ta4_advance(TA4Cursor(), 10)
    assert lay.ta4_allowed(cur, may_end_audio=False) == {"audio"}
    assert lay.ta4_allowed(cur) == {"audio", "audio_pad", "text", "stop"}
    assert lay.ta4_allowed(TA4Cursor(), may_end_audio=False) == {"text", "tts_pad"}
