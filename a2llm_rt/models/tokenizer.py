"""Text tokenizer of a backbone: the real one from a local directory, or a tiny byte-level BPE built in code.

:class:`TextTokenizer` is the one interface the rest of the runtime uses (``encode`` / ``decode`` /
``token_to_id`` / ``save``). The real Step-Audio-2 tokenizer is loaded through ``transformers.AutoTokenizer`` with
``trust_remote_code=False`` (falling back to its ``tokenizer.json`` through ``PreTrainedTokenizerFast`` when the
directory names a custom class): no code from the checkpoint directory runs. Special tokens written in text
(``<|BOT|>``, ``<audio_patch>``...) always encode to their single ids.

:func:`build_tiny_tokenizer` trains a byte-level BPE on a few sentences with the ``tokenizers`` library and adds
the special tokens at exactly the ids of a token layout (``TINY``); it is deterministic and needs no download.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from a2llm_rt.errors import InputError
from a2llm_rt.models.token_layout import SPECIAL_TOKENS, TINY, TokenLayout

TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.json", "merges.txt", "special_tokens_map.json")

TINY_CORPUS = (
    "Hello! How are you today?",
    "I am fine, thank you. And you?",
    "The quick brown fox jumps over the lazy dog.",
    "Please tell me about the weather in Paris.",
    "It is sunny and warm, a good day for a walk.",
    "What is your name? My name is Ada.",
    "system human assistant",
    "You are a helpful assistant.",
    "Give me a brief introduction to the Great Wall.",
)


class TextTokenizer:
    """Wraps a ``transformers`` fast tokenizer: ids without added BOS/EOS; specials in text parse as specials."""

    def __init__(self, hf_tokenizer) -> None:
        self.hf = hf_tokenizer
        self._vocab: dict[str, int] = hf_tokenizer.get_vocab()

    def __len__(self) -> int:
        return len(self._vocab)

    def encode(self, text: str) -> list[int]:
        return list(self.hf.encode(text, add_special_tokens=False))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        return self.hf.decode(list(ids), skip_special_tokens=skip_special_tokens)

    def token_to_id(self, token: str) -> int | None:
        return self._vocab.get(token)

    def save(self, directory: str | Path) -> None:
        """Write the tokenizer files into ``directory`` (``tokenizer.json``, ``tokenizer_config.json``...), each
        file atomically."""
        import tempfile

        from a2llm_rt.utils.fileio import atomic_write

        with tempfile.TemporaryDirectory() as tmp:
            self.hf.save_pretrained(tmp)
            for f in sorted(Path(tmp).iterdir()):
                if f.is_file():
                    with atomic_write(Path(directory) / f.name, "wb") as out:
                        out.write(f.read_bytes())


def load_tokenizer(directory: str | Path) -> TextTokenizer:
    """Load the tokenizer files of a local model directory (never downloads, never runs remote code)."""
    from transformers import AutoTokenizer, PreTrainedTokenizerFast

    directory = Path(directory)
    if not (directory / "tokenizer.json").is_file() and not (directory / "vocab.json").is_file():
        raise InputError("no tokenizer files (tokenizer.json or vocab.json + merges.txt)", directory)
    try:
        hf = AutoTokenizer.from_pretrained(str(directory), trust_remote_code=False, local_files_only=True)
    except Exception as e:  # a custom tokenizer class (needs remote code) or a broken config
        if not (directory / "tokenizer.json").is_file():
            raise InputError(f"cannot load tokenizer: {e}", directory) from None
        try:
            hf = PreTrainedTokenizerFast(tokenizer_file=str(directory / "tokenizer.json"))
        except Exception as e2:
            raise InputError(f"cannot load tokenizer.json: {e2}", directory) from None
    return TextTokenizer(hf)


def build_tiny_tokenizer(layout: TokenLayout = TINY, corpus: Sequence[str] = TINY_CORPUS) -> TextTokenizer:
    """A byte-level BPE trained on ``corpus`` whose ids fit ``layout``: text ids below its first special id.

    The BPE vocabulary is filled up to the first special id (reserved tokens when training yields fewer merges),
    then each special of ``layout`` is added at its id; ids between specials are reserved tokens. Audio codes
    are not tokenizer entries (the engine maps them with the layout). Deterministic.
    """
    from tokenizers import AddedToken, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    specials = {getattr(layout, f): tok for f, tok in SPECIAL_TOKENS.items() if getattr(layout, f) is not None}
    if not specials:
        raise ValueError(f"layout {layout.name!r} names no special ids")
    first = min(specials)
    alphabet = pre_tokenizers.ByteLevel.alphabet()
    if first < len(alphabet):
        raise ValueError(f"layout {layout.name!r}: first special id {first} < byte alphabet size {len(alphabet)}")
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=first, initial_alphabet=alphabet, show_progress=False)
    tok.train_from_iterator(list(corpus), trainer=trainer)
    top = max(specials) + 1
    additions: list[AddedToken] = []
    for i in range(tok.get_vocab_size(), top):
        content = specials.get(i, f"<|reserved_{i}|>")
        additions.append(AddedToken(content, special=True, normalized=False))
    tok.add_special_tokens(additions)
    for i, content in specials.items():
        if tok.token_to_id(content) != i:
            raise RuntimeError(f"tiny tokenizer put {content} at {tok.token_to_id(content)}, layout wants {i}")
    hf = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=SPECIAL_TOKENS["eot"] if layout.eot is not None else None,
        pad_token=SPECIAL_TOKENS["pad"] if layout.pad is not None else None,
    )
    return TextTokenizer(hf)
