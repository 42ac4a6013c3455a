"""The Step-Audio-2-mini backbone, implemented here on top of transformers' ``Qwen2Model``.

No ``trust_remote_code``: nothing from a checkpoint directory is executed. Modules (and checkpoint names):
``model`` (Qwen2Model), ``lm_head`` (no bias), ``encoder`` (Whisper-style, ``audio_encoder.py``), ``adapter``.
The adapter outputs replace the embeddings of ``<audio_patch>`` tokens, in order of appearance.

Two ways to run it (model and driver apart, moshi's ``LMModel``/``LMGen``):

- :meth:`StepAudio2Backbone.forward`: full sequences through transformers' Qwen2Model (training, LoRA);
- :meth:`StepAudio2Backbone.prefill` / :meth:`StepAudio2Backbone.step`: the engine's cached path over a
  :class:`~a2llm_rt.models.kv_cache.KVCache` with per-row lengths (sessions of different lengths in one batch
  decode exactly as alone). It reuses the same Qwen2 layer modules (so LoRA-wrapped projections work) with its own
  attention over the static cache; equal to ``forward`` up to float rounding (tested in float32).

Hidden-state tap ``t`` (config ``tap_layer``) follows transformers' ``hidden_states[t]``: 0 = embeddings,
``1..L-1`` = output of decoder layer ``t``, ``L`` (or -1, the default) = the final normed state that feeds ``lm_head``.

Weights: :mod:`a2llm_rt.models.checkpoint` (HF-format directories, explicit name map, strict name/shape checks).
"""

from __future__ import annotations

import dataclasses
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn
from transformers import Qwen2Config, Qwen2Model
from transformers.models.qwen2.modeling_qwen2 import apply_rotary_pos_emb

from a2llm_rt.config import Config
from a2llm_rt.errors import InputError
from a2llm_rt.models.audio_encoder import AudioAdapter, AudioEncoder, encode_audio
from a2llm_rt.models.kv_cache import KVCache
from a2llm_rt.models.token_layout import TokenLayout, get_token_layout


def grouped_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Grouped-query attention with the query groups folded into the sequence axis, so that no ``enable_gqa`` flag
    is needed and a boolean mask can use a fused SDPA kernel (``enable_gqa`` with a mask may fall to the math path,
    which repeats K/V over the whole cache every layer).

    q ``[B, H_q, T, D]``; k, v ``[B, H_kv, S, D]`` (``H_q = G * H_kv``; query head ``h`` reads KV head ``h // G``, as
    ``enable_gqa`` and ``repeat_kv`` do); mask ``[B, 1, T, S]`` bool (True = visible). Returns ``[B, H_q, T, D]``.
    """
    b, hq, t, d = q.shape
    hkv = k.shape[1]
    g = hq // hkv
    if g == 1:
        return F.scaled_dot_product_attention(q, k, v, mask)
    qf = q.reshape(b, hkv, g * t, d)  # heads h = j*G + i -> [j, i*T + t]
    mf = mask[:, :, None].expand(b, mask.shape[1], g, t, mask.shape[-1]).reshape(b, mask.shape[1], g * t, -1)
    return F.scaled_dot_product_attention(qf, k, v, mf).reshape(b, hq, t, d)


@dataclasses.dataclass
class BackboneConfig(Config):
    """Architecture of a Step-Audio-2-style backbone (defaults: Step-Audio-2-mini)."""

    vocab_size: int = 158720
    hidden_size: int = 3584
    num_layers: int = 28
    num_heads: int = 28
    num_kv_heads: int = 4
    intermediate_size: int = 18944
    rope_theta: float = 1.0e6
    rms_norm_eps: float = 1.0e-6
    max_position_embeddings: int = 16384
    n_mels: int = 128
    """Mel bins of the audio input."""
    audio_ctx: int = 1500
    """Encoder positions (after conv2): 1500 = 30 s."""
    audio_state: int = 1280
    audio_heads: int = 20
    audio_layers: int = 32
    adapter_kernel: int = 3
    adapter_stride: int = 2
    adapter_hidden: int = 2048
    tap_layer: int = -1
    """Hidden-state tap (transformers' ``hidden_states`` index; -1 = last, the normed state)."""
    token_layout: str = "step_audio2"
    """Name of the :class:`TokenLayout` preset (``step_audio2`` or ``tiny``)."""

    def validate(self) -> None:
        if self.hidden_size % self.num_heads or self.num_heads % self.num_kv_heads:
            raise ValueError("hidden_size must divide by num_heads and num_heads by num_kv_heads")
        if self.audio_state % self.audio_heads:
            raise ValueError("audio_state must divide by audio_heads")
        if not -1 <= self.tap_layer <= self.num_layers:
            raise ValueError(f"tap_layer must be in [-1, {self.num_layers}]")
        if self.adapter_kernel != 3 or self.adapter_stride < 1:
            raise ValueError("the adapter is a kernel-3 conv with padding 1 (placeholder count formula)")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_heads

    @property
    def tap_index(self) -> int:
        return self.num_layers if self.tap_layer == -1 else self.tap_layer

    def qwen2_config(self) -> Qwen2Config:
        cfg = Qwen2Config(
            vocab_size=self.vocab_size,
            hidden_size=self.hidden_size,
            intermediate_size=self.intermediate_size,
            num_hidden_layers=self.num_layers,
            num_attention_heads=self.num_heads,
            num_key_value_heads=self.num_kv_heads,
            max_position_embeddings=self.max_position_embeddings,
            rms_norm_eps=self.rms_norm_eps,
            rope_parameters={"rope_type": "default", "rope_theta": float(self.rope_theta)},
            tie_word_embeddings=False,
        )
        cfg._attn_implementation = "sdpa"
        return cfg


STEP_AUDIO2_MINI = BackboneConfig()
TINY_BACKBONE = BackboneConfig(
    vocab_size=368,
    hidden_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    intermediate_size=128,
    rope_theta=1.0e4,
    max_position_embeddings=4096,
    audio_state=32,
    audio_heads=2,
    audio_layers=2,
    adapter_hidden=64,
    token_layout="tiny",
)
PRESETS: dict[str, BackboneConfig] = {"step_audio2_mini": STEP_AUDIO2_MINI, "tiny": TINY_BACKBONE}


class StepOutput(NamedTuple):
    logits: torch.Tensor
    """``[B, V]`` (prefill: at each row's last new token)."""
    hidden: torch.Tensor
    """Tapped hidden states: prefill ``[B, T, d]`` (all new tokens), step ``[B, d]``."""


class StepAudio2Backbone(nn.Module):
    """Audio encoder + adapter + Qwen2 decoder LM. Build with a :class:`BackboneConfig` (random weights) or
    :func:`from_pretrained_dir`."""

    def __init__(self, cfg: BackboneConfig, layout: TokenLayout | None = None):
        super().__init__()
        self.cfg = cfg
        self.layout = layout if layout is not None else get_token_layout(cfg.token_layout)
        if self.layout.vocab_size != cfg.vocab_size:
            raise InputError(
                f"token layout {self.layout.name!r} has vocab {self.layout.vocab_size}, backbone {cfg.vocab_size}"
            )
        self.model = Qwen2Model(cfg.qwen2_config())
        self.lm_head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
        self.encoder = AudioEncoder(cfg.n_mels, cfg.audio_ctx, cfg.audio_state, cfg.audio_heads, cfg.audio_layers)
        self.adapter = AudioAdapter(
            cfg.audio_state, cfg.hidden_size, cfg.adapter_kernel, cfg.adapter_stride, cfg.adapter_hidden
        )

    # ---- inputs ------------------------------------------------------------------------------------------------
    def encode_audio(self, mels: list[torch.Tensor]) -> list[torch.Tensor]:
        """Adapter outputs per 25 s chunk: ``[n_mels, T_i]`` -> ``[audio_placeholder_count(T_i), d]``."""
        return encode_audio(self.encoder, self.adapter, mels)

    def embed(self, input_ids: torch.Tensor, audio_embeds: list[torch.Tensor] | None = None) -> torch.Tensor:
        """Token embeddings ``[B, T, d]`` with ``<audio_patch>`` rows replaced by ``audio_embeds`` in row-major order.

        The total rows of ``audio_embeds`` must equal the number of ``<audio_patch>`` ids, else :class:`InputError`.
        """
        emb = self.model.embed_tokens(input_ids)
        patch = input_ids == self.layout.special("audio_patch") if self.layout.audio_patch is not None else None
        n_patch = 0 if patch is None else int(patch.sum())
        n_audio = sum(int(a.shape[0]) for a in audio_embeds) if audio_embeds else 0
        if n_patch != n_audio:
            raise InputError(f"{n_patch} <audio_patch> tokens but {n_audio} audio feature rows")
        if n_audio:
            feats = torch.cat(list(audio_embeds), 0).to(emb.dtype)
            emb = emb.masked_scatter(patch[..., None], feats)
        return emb

    # ---- full-sequence (training) path ---------------------------------------------------------------------------
    def forward(
        self,
        input_ids: torch.Tensor,
        audio_embeds: list[torch.Tensor] | None = None,
        attention_mask: torch.Tensor | None = None,
        tap_layer: int | None = None,
    ) -> StepOutput:
        """input_ids ``[B, T]`` -> (logits ``[B, T, V]``, tapped hidden ``[B, T, d]``) through HF Qwen2Model.

        ``attention_mask`` ``[B, T]`` (1 = token, 0 = padding) as in transformers.
        """
        emb = self.embed(input_ids, audio_embeds)
        tap = self.cfg.tap_index if tap_layer is None else (self.cfg.num_layers if tap_layer == -1 else tap_layer)
        want_all = tap < self.cfg.num_layers
        out = self.model(inputs_embeds=emb, attention_mask=attention_mask, output_hidden_states=want_all)
        last = out.last_hidden_state
        hidden = last if tap == self.cfg.num_layers else out.hidden_states[tap]
        return StepOutput(self.lm_head(last), hidden)

    # ---- cached (engine) path ------------------------------------------------------------------------------------
    def new_cache(
        self, batch_size: int, max_len: int, dtype: torch.dtype | None = None, device: torch.device | str | None = None
    ) -> KVCache:
        """An empty :class:`KVCache` for ``batch_size`` session rows of up to ``max_len`` tokens each."""
        p = self.lm_head.weight
        return KVCache.allocate(
            batch_size,
            self.cfg.num_layers,
            self.cfg.num_kv_heads,
            self.cfg.head_dim,
            max_len,
            dtype=p.dtype if dtype is None else dtype,
            device=p.device if device is None else device,
        )

    def extend(
        self,
        embeds: torch.Tensor,
        cache: KVCache,
        rows: torch.Tensor | None = None,
        n_new: torch.Tensor | None = None,
        tap_layer: int | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Append ``embeds`` ``[B, T, d]`` to cache rows ``rows`` ``[B]`` (all rows when None); row ``b`` takes its
        first ``n_new[b]`` tokens (right padding after them is computed but never becomes visible).

        Returns (final normed hidden ``[B, T, d]``, tapped hidden ``[B, T, d]``) and advances
        ``cache.lengths[rows]`` by ``n_new``. Static shapes, no host sync: safe under CUDA-graph capture.
        """
        b, t, _ = embeds.shape
        dev = embeds.device
        tap = self.cfg.tap_index if tap_layer is None else (self.cfg.num_layers if tap_layer == -1 else tap_layer)
        start = cache.lengths.clone() if rows is None else cache.lengths[rows]  # [B]
        pos = start[:, None] + torch.arange(t, device=dev)[None, :]  # [B, T]
        visible = torch.arange(cache.max_len, device=dev)[None, None, :] <= pos[:, :, None]  # [B, T, S]
        mask = visible[:, None]  # [B, 1, T, S]
        row_idx = (torch.arange(b, device=dev) if rows is None else rows)[:, None]  # [B, 1]
        cos, sin = self.model.rotary_emb(embeds, pos)
        h = embeds
        tapped = h if tap == 0 else None
        hd = self.cfg.head_dim
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(b, t, -1, hd).transpose(1, 2)
            k = attn.k_proj(x).view(b, t, -1, hd).transpose(1, 2)
            v = attn.v_proj(x).view(b, t, -1, hd).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            kc, vc = cache.layer(i)
            kc[row_idx, :, pos] = k.transpose(1, 2).to(kc.dtype)  # [B, T, H, D] into slots pos
            vc[row_idx, :, pos] = v.transpose(1, 2).to(vc.dtype)
            keys, values = (kc, vc) if rows is None else (kc[rows], vc[rows])
            o = grouped_attention(q, keys.to(q.dtype), values.to(q.dtype), mask)
            h = h + attn.o_proj(o.transpose(1, 2).reshape(b, t, -1))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
            if i + 1 == tap:
                tapped = h
        h = self.model.norm(h)
        if tap == self.cfg.num_layers:
            tapped = h
        adv = torch.full((b,), t, dtype=torch.long, device=dev) if n_new is None else n_new.to(torch.long)
        if rows is None:
            cache.lengths.add_(adv)
        else:
            cache.lengths[rows] = start + adv
        return h, tapped

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,
        cache: KVCache,
        audio_mels: list[torch.Tensor] | None = None,
        audio_embeds: list[torch.Tensor] | None = None,
        rows: torch.Tensor | list[int] | None = None,
        lengths: torch.Tensor | list[int] | None = None,
    ) -> StepOutput:
        """Run a prompt (or a new turn) into cache rows; rows continue from what they already hold.

        input_ids ``[B, T]`` right-padded; ``lengths`` ``[B]`` real tokens per row (default ``T``); ``rows`` ``[B]``
        cache rows (default ``0..B-1``). Audio: ``audio_mels`` (chunks ``[n_mels, T_i]`` in order of their
        ``<audio_patch>`` blocks, row-major) or precomputed ``audio_embeds``. Returns (logits ``[B, V]`` at each
        row's last real token, tapped hidden ``[B, T, d]``). Raises :class:`InputError` when a row would overflow.
        """
        dev = self.lm_head.weight.device
        input_ids = input_ids.to(dev)
        b, t = input_ids.shape
        rows_t = torch.arange(b, device=dev) if rows is None else torch.as_tensor(rows, device=dev, dtype=torch.long)
        n_new = torch.full((b,), t, device=dev) if lengths is None else torch.as_tensor(lengths, device=dev)
        if rows_t.shape != (b,) or n_new.shape != (b,) or int(n_new.min()) < 1 or int(n_new.max()) > t:
            raise InputError(f"prefill: rows/lengths must be [{b}] with 1 <= length <= {t}")
        if int((cache.lengths[rows_t] + t).max()) > cache.max_len:
            raise InputError(
                f"prefill of {t} tokens overflows a cache row of {cache.max_len} (lengths "
                f"{cache.lengths[rows_t].tolist()})"
            )
        if audio_mels is not None:
            if audio_embeds is not None:
                raise InputError("give audio_mels or audio_embeds, not both")
            audio_embeds = self.encode_audio(audio_mels)
        emb = self.embed(input_ids, audio_embeds)
        h, tapped = self.extend(emb, cache, None if rows is None else rows_t, n_new)
        last = h[torch.arange(b, device=dev), n_new.to(torch.long) - 1]  # [B, d]
        return StepOutput(self.lm_head(last), tapped)

    @torch.no_grad()
    def step(self, token_ids: torch.Tensor, cache: KVCache, active: torch.Tensor | None = None) -> StepOutput:
        """One decode step for every cache row: token_ids ``[B, 1]`` (B = cache rows) -> (logits ``[B, V]``,
        tapped hidden ``[B, d]``).

        Row ``b``'s token goes to position ``cache.lengths[b]``. ``active`` ``[B]`` bool: rows where False are
        computed but do not advance (their write stays invisible), for idle slots. No host sync (graph capture),
        hence no bounds check: the caller stops a row before ``cache.lengths[b] == cache.max_len``.
        """
        emb = self.model.embed_tokens(token_ids)
        n_new = None if active is None else active.to(torch.long)
        h, tapped = self.extend(emb, cache, None, n_new)
        return StepOutput(self.lm_head(h[:, -1]), tapped[:, -1])
