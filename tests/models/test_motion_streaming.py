"""The streaming contract's shared checks (``tests/streaming_checks.py``) on the motion tokenizer's streaming halves:
the RVQ decoder at look-ahead 0, 1 and 2 (with and without the linear skip) and the encoder. The connector is not a
streaming module (``MotionConnector.step`` is stateless: the engine passes the previous window's codes in)."""

from __future__ import annotations

import pytest
import torch

from a2llm_rt.models.motion_tokenizer import MotionTokenizer, MotionTokenizerConfig
from tests.streaming_checks import check_all, check_reset_one_row, module_case


def _tokenizer(lookahead: int, linear_skip: bool) -> MotionTokenizer:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        cfg = MotionTokenizerConfig(layout="arkit52", width=16, latent_dim=8, num_quantizers=3, codebook_size=16,
                                    lookahead=lookahead, linear_skip=linear_skip, num_res_blocks=2,
                                    dropout=0.0)  # fmt: skip
        return MotionTokenizer(cfg).eval()


CASES = [(0, False), (1, False), (1, True), (2, False)]


@pytest.mark.parametrize(("lookahead", "skip"), CASES)
def test_decoder_contract(lookahead, skip):
    m = _tokenizer(lookahead, skip)
    case = module_case(f"decoder la={lookahead} skip={skip}", m.decoder, m.cfg.latent_dim, 9, m.group)
    with torch.no_grad():
        check_all(case)


@pytest.mark.parametrize("skip", [False, True])
def test_encoder_contract(skip):
    m = _tokenizer(0, skip)
    case = module_case(f"encoder skip={skip}", m.encoder, m.dim, 23, 1 / m.group)
    with torch.no_grad():
        check_all(case)
        check_reset_one_row(case, before=7)  # the rows are then at different phases of their tokens


def test_a_stream_shorter_than_the_lookahead_is_flushed_whole():
    """Look-ahead 2, one token: its frames come out of the flush (they used to be lost)."""
    m = _tokenizer(2, False)
    z = torch.randn(1, 1, m.cfg.latent_dim)
    with torch.no_grad():
        y, st = m.decoder.step(z, m.decoder.init_state(1))
        assert y.shape[1] == 0
        assert m.decoder.flush_lengths(st).tolist() == [5]
        f, _ = m.decoder.flush(st)
        torch.testing.assert_close(f, m.decoder(z))
